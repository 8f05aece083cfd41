package threadpool

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"time"
)

// Notifier is a wake-up signal that one consumer waits on, made for crossing
// from producers (workers, completion callbacks) to an event loop. On Linux it
// is an eventfd created with EFD_NONBLOCK|EFD_CLOEXEC; elsewhere a
// non-blocking pipe pair. Waiting goes through Go's netpoller: no thread is
// parked in read(2) and nothing spins.
//
// Notify coalesces: the first Notify after the consumer took the last signal
// writes to the file descriptor; further Notify calls while that signal is
// pending are absorbed and cost no system call. Wait and Clear take the
// signal: they read the descriptor back to zero first and then clear the
// pending flag, so a Notify racing with them writes again and nothing is
// missed. NewNotifier(WithCoalescing(false)) writes on every Notify.
//
// Notify, Flush and Stats may be called from any goroutine. Wait and Clear
// belong to one consumer goroutine at a time. After Close, Notify does
// nothing, Wait returns ErrClosed and Fd returns -1.
type Notifier struct {
	ev       event // the descriptor(s); set once in NewNotifier
	coalesce bool  // written once in NewNotifier

	pending atomic.Bool // a written signal not yet taken by the consumer
	closed  atomic.Bool

	notifies    atomic.Uint64
	writes      atomic.Uint64
	absorbed    atomic.Uint64
	writeErrors atomic.Uint64
	wakeups     atomic.Uint64

	// lastErr holds the last write error; any goroutine.
	lastErr atomic.Pointer[error]

	// writeFault, when set by a test before use, replaces the write(2) of a
	// signal and returns its error.
	writeFault func() error
}

// NotifierOption configures a Notifier in NewNotifier.
type NotifierOption func(*Notifier)

// WithCoalescing turns the pending-signal coalescing of Notify on (the
// default) or off. Off, every Notify is one write(2), which is how a
// notification per completion behaves.
func WithCoalescing(on bool) NotifierOption { return func(n *Notifier) { n.coalesce = on } }

// NotifierStats counts what a Notifier did.
type NotifierStats struct {
	Notifies    uint64 // Notify and Flush calls
	Writes      uint64 // signals written to the descriptor
	Absorbed    uint64 // Notify calls absorbed by a pending signal
	WriteErrors uint64 // writes that failed (EAGAIN counts as success)
	Wakeups     uint64 // signals taken by Wait or Clear
}

// NewNotifier makes a Notifier. The caller must Close it.
func NewNotifier(opts ...NotifierOption) (*Notifier, error) {
	n := &Notifier{coalesce: true}
	for _, o := range opts {
		o(n)
	}
	if err := n.ev.open(n); err != nil {
		return nil, err
	}
	return n, nil
}

// Notify signals the consumer. With coalescing on it writes only when no
// signal is pending. Any goroutine; a no-op after Close.
func (n *Notifier) Notify() {
	n.notifies.Add(1)
	if n.closed.Load() {
		return
	}
	if n.coalesce && n.pending.Swap(true) {
		n.absorbed.Add(1)
		return
	}
	n.ev.signal()
}

// Flush is Notify, so that a Notifier can be handed to DeferCall or
// Deferrer.Call: one signal per batch, however many completions asked for it.
func (n *Notifier) Flush() { n.Notify() }

// wrote records the outcome of one signal write; called by the event
// implementation.
func (n *Notifier) wrote(err error) {
	if err == nil {
		n.writes.Add(1)
		return
	}
	n.writeFailed(err)
}

// writeFailed is wrote's error path, apart so that err escapes to the heap
// only when a write failed.
func (n *Notifier) writeFailed(err error) {
	n.writeErrors.Add(1)
	n.lastErr.Store(&err)
	// The signal did not reach the consumer: let the next Notify try again.
	n.pending.Store(false)
}

// Wait blocks until a signal is pending, takes it, and returns nil. It returns
// ctx's error when ctx ends first and ErrClosed when the Notifier is closed
// before or during the wait. One consumer goroutine at a time.
func (n *Notifier) Wait(ctx context.Context) error {
	if n.closed.Load() {
		return ErrClosed
	}
	if done := ctx.Done(); done != nil {
		if err := ctx.Err(); err != nil {
			return err
		}
		fired := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			n.ev.setReadDeadline(time.Unix(1, 0))
			close(fired)
		})
		defer func() {
			if !stop() {
				<-fired
				n.ev.setReadDeadline(time.Time{})
			}
		}()
	}
	err := n.ev.wait()
	switch {
	case err == nil:
	case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, os.ErrClosed) || n.closed.Load():
		return ErrClosed
	default:
		return err
	}
	n.pending.Store(false)
	n.wakeups.Add(1)
	return nil
}

// Clear takes a pending signal without blocking and reports whether one was
// pending. One consumer goroutine at a time; false after Close.
func (n *Notifier) Clear() bool {
	if n.closed.Load() {
		return false
	}
	got := n.ev.consume()
	if n.pending.Swap(false) || got {
		n.wakeups.Add(1)
		return true
	}
	return false
}

// Fd returns the descriptor that becomes readable when a signal is pending,
// for an external poller (epoll, kqueue); -1 after Close. Do not read or
// write it directly: use Wait or Clear and Notify.
func (n *Notifier) Fd() int {
	if n.closed.Load() {
		return -1
	}
	return n.ev.fd()
}

// Close releases the descriptors and wakes a blocked Wait, which returns
// ErrClosed. Calling Close again returns nil.
func (n *Notifier) Close() error {
	if n.closed.Swap(true) {
		return nil
	}
	return n.ev.close()
}

// Stats returns the Notifier's counters. Any goroutine.
func (n *Notifier) Stats() NotifierStats {
	return NotifierStats{
		Notifies:    n.notifies.Load(),
		Writes:      n.writes.Load(),
		Absorbed:    n.absorbed.Load(),
		WriteErrors: n.writeErrors.Load(),
		Wakeups:     n.wakeups.Load(),
	}
}

// LastWriteError returns the error of the last failed signal write, or nil.
func (n *Notifier) LastWriteError() error {
	if p := n.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// writeFault returns the error a test asked the next signal write to fail
// with, or nil.
func writeFault(n *Notifier) error {
	if n.writeFault != nil {
		return n.writeFault()
	}
	return nil
}
