package threadpool

import (
	"context"
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by Submit, SubmitCo, SetLimits and Batch.Flush
	// once Shutdown or Close has begun, and by Notifier.Wait once the
	// Notifier is closed. A request refused with ErrClosed gets no callback.
	ErrClosed = errors.New("threadpool: pool is closed")

	// ErrNilFunc is returned by Submit and SubmitCo when fn is nil, and by
	// Batch.Add, which then records nothing. No callback is run.
	ErrNilFunc = errors.New("threadpool: nil Func")

	// ErrQueueFull is returned by Submit and SubmitCo when the pool was built
	// WithMaxQueued(n) and n requests are already waiting for a worker, and by
	// Batch.Flush when its requests would take that count above n (none of
	// them is then submitted). Running requests do not count, nor queued ones
	// that a woken, an idle or a yet-to-start worker will take (see
	// WithMaxQueued). No callback is run. Flush wraps it, with a message,
	// for a batch that cannot fit at the pool's current limits however idle
	// the pool is: test with errors.Is.
	ErrQueueFull = errors.New("threadpool: queue is full")

	// ErrInvalidLimits is wrapped by the errors that New and SetLimits return for
	// worker limits that cannot hold (min < 0, max <= 0, min > max) and for other
	// out-of-range options.
	ErrInvalidLimits = errors.New("threadpool: invalid limits")

	// ErrGoexit is the Value of the *PanicError delivered to the Callback, or
	// returned by SubmitCo, for a Func that called runtime.Goexit. The worker
	// that ran it exits; another starts in its place if the pool is then
	// below its minimum or queued work needs one, as for any worker that
	// leaves.
	ErrGoexit = errors.New("threadpool: Func called runtime.Goexit")
)

// ErrCanceled is the error a Callback receives when its request was canceled
// before it started: by Cancel, by Close, or by a Shutdown whose ctx ended.
// SubmitCo returns it when Close or such a Shutdown canceled its queued
// request; when SubmitCo's own ctx ends first it returns ctx's error
// instead (the request is canceled all the same, and no callback exists to
// receive ErrCanceled). errors.Is(ErrCanceled, context.Canceled) is true.
var ErrCanceled error = canceledError{}

type canceledError struct{}

func (canceledError) Error() string { return "threadpool: request canceled before it started" }

// Is makes errors.Is(err, context.Canceled) hold for ErrCanceled.
func (canceledError) Is(target error) bool { return target == context.Canceled }

// PanicError is what a Callback receives, and SubmitCo returns, when the Func
// panicked (or called runtime.Goexit, with Value ErrGoexit). It is also the
// value re-panicked on the completion loop when a Callback, or a Flush run at
// the end of a batch, panics and the pool has no panic handler, so that the
// original stack is not lost.
type PanicError struct {
	// Value is the value passed to panic.
	Value any
	// Stack is the stack of the panicking goroutine, as debug.Stack formats it.
	Stack []byte
}

// Error reports the panic value and the stack where it happened.
func (e *PanicError) Error() string {
	return fmt.Sprintf("threadpool: panic: %v\n\n%s", e.Value, e.Stack)
}

// Unwrap returns Value when it is an error, so errors.Is and errors.As see
// through a panic with an error value.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}
