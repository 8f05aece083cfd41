//go:build !race

package threadpool_test

// raceEnabled reports a -race build, where the long tests run smaller.
const raceEnabled = false
