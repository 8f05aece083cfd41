//go:build linux && pipenotifier

package threadpool_test

// notifierFds is how many descriptors a Notifier holds: a pipe's two ends.
const notifierFds = 2
