//go:build !race

package threadpool

// raceBuild reports a -race build, in which the pool also checks that
// DeferCall and the delivery of completions happen on the loop goroutine.
const raceBuild = false
