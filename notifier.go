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
// A signal whose write fails (the descriptor was closed under the Notifier;
// EAGAIN, a saturated counter or full pipe, counts as written) is not lost:
// it stays owed to the consumer until Wait or Clear takes it. Wait takes it
// without the descriptor: the failed write ends a blocked Wait at once. A
// consumer that polls Fd itself cannot see it there, and should call Missed
// now and then (Clear takes the signal). The next Notify writes again.
//
// Notify, Flush, Missed and Stats may be called from any goroutine. Wait and
// Clear belong to one consumer goroutine at a time. After Close, Notify does
// nothing, Wait returns ErrClosed and Fd returns -1.
//
// Make a Notifier with NewNotifier: the zero Notifier has no descriptor and
// must not be used.
type Notifier struct {
	ev       event // the descriptor(s); set once in NewNotifier
	coalesce bool  // written once in NewNotifier

	pending atomic.Bool // a written signal not yet taken by the consumer
	missed  atomic.Bool // a signal whose write failed, not yet taken by the consumer
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
	// readFault, when set by a test, makes the reads of Wait and Clear fail
	// with its error instead of reading; it may be set while the consumer
	// waits.
	readFault atomic.Pointer[func() error]
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

// NewNotifier makes a Notifier; nil options are skipped, as New skips them.
// The caller must Close it.
func NewNotifier(opts ...NotifierOption) (*Notifier, error) {
	n := &Notifier{coalesce: true}
	for _, o := range opts {
		if o != nil {
			o(n)
		}
	}
	if err := n.ev.open(n); err != nil {
		return nil, err
	}
	return n, nil
}

// Notify signals the consumer. With coalescing on it writes only when no
// signal is pending. Any goroutine; a no-op after Close.
func (n *Notifier) Notify() { n.notify() }

// notify is Notify, and reports whether this call wrote the signal (false
// when it was absorbed by a pending one, or after Close).
func (n *Notifier) notify() bool {
	n.notifies.Add(1)
	if n.closed.Load() {
		return false
	}
	if n.coalesce && n.pending.Swap(true) {
		n.absorbed.Add(1)
		return false
	}
	n.ev.signal()
	return true
}

// Flush is Notify, so that a Notifier can be handed to DeferCall or
// Deferrer.Call: one signal per batch, however many completions asked for it.
// Any goroutine; a no-op after Close.
func (n *Notifier) Flush() { n.Notify() }

// wrote records the outcome of one signal write; called by the event
// implementation.
func (n *Notifier) wrote(err error) {
	if err == nil {
		n.writes.Add(1)
		return
	}
	if n.closed.Load() {
		// Close ran between Notify's check and the write, or during it (a
		// pipe's read end already closed: EPIPE): the signal comes after
		// Close, and does nothing, as Notify documents.
		return
	}
	n.writeFailed(err)
}

// writeFailed is wrote's error path, apart so that err escapes to the heap
// only when a write failed.
func (n *Notifier) writeFailed(err error) {
	n.writeErrors.Add(1)
	n.lastErr.Store(&err)
	// The signal did not reach the consumer: owe it to the consumer, let the
	// next Notify write again, and end a Wait blocked on the descriptor (the
	// read deadline wakes it without a write; Wait and Clear drop it).
	n.missed.Store(true)
	n.pending.Store(false)
	n.ev.setReadDeadline(kick)
}

// kick is a read deadline in the past: setting it ends a blocked read at once.
var kick = time.Unix(1, 0)

// takeMissed takes a signal owed by a failed write. Consumer only.
func (n *Notifier) takeMissed() bool {
	return n.missed.Load() && n.missed.Swap(false)
}

// Missed reports whether a signal write failed and the signal has not been
// taken since by Wait or Clear. A consumer that polls Fd itself should check
// it now and then (on a timer, say) and, when it reports true, call Clear and
// do its work as if Fd had been readable. After Close it is false: nothing
// is owed to a consumer that can no longer wait. Any goroutine.
func (n *Notifier) Missed() bool { return n.missed.Load() && !n.closed.Load() }

// Wait blocks until a signal is pending, takes it, and returns nil; a signal
// whose write failed counts as pending. It returns ctx's error when ctx ends
// first, or had ended before the call (a pending signal then stays pending),
// ErrClosed when the Notifier is closed before or during the wait, and the
// error of a failed read of the descriptor (an *os.SyscallError); the signal
// may then still be pending. One consumer goroutine at a time.
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
			n.ev.setReadDeadline(kick)
			close(fired)
		})
		defer func() {
			if !stop() {
				<-fired
				n.ev.setReadDeadline(time.Time{})
			}
		}()
	}
	for {
		if n.takeMissed() {
			n.ev.consume() // a signal written meanwhile is taken too
			break
		}
		err := n.ev.wait()
		if err == nil {
			break
		}
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, os.ErrDeadlineExceeded):
			// A failed write kicked the wait: drop the kick and look again.
			// If ctx ended meanwhile, its deadline is gone too: check ctx.
			n.ev.setReadDeadline(time.Time{})
			if err := ctx.Err(); err != nil {
				return err
			}
		case errors.Is(err, os.ErrClosed) || n.closed.Load():
			return ErrClosed
		default:
			return err
		}
	}
	n.pending.Store(false)
	n.wakeups.Add(1)
	return nil
}

// Clear takes a pending signal without blocking and reports whether one was
// pending; a signal whose write failed counts as pending. One consumer
// goroutine at a time; false after Close.
func (n *Notifier) Clear() bool {
	if n.closed.Load() {
		return false
	}
	missed := n.takeMissed()
	got := n.ev.consume()
	if n.pending.Swap(false) || got || missed {
		n.wakeups.Add(1)
		return true
	}
	return false
}

// Fd returns the descriptor that becomes readable when a signal is pending,
// for an external poller (epoll, kqueue); -1 after Close. Do not read or
// write it directly: use Wait or Clear and Notify. Any goroutine.
func (n *Notifier) Fd() int {
	if n.closed.Load() {
		return -1
	}
	return n.ev.fd()
}

// Close releases the descriptors and wakes a blocked Wait, which returns
// ErrClosed. Any goroutine, concurrently with Notify and Wait too (a Notify
// racing with it does nothing and counts no write error). Calling Close
// again returns nil.
func (n *Notifier) Close() error {
	if n.closed.Swap(true) {
		return nil
	}
	return n.ev.close()
}

// Stats returns the Notifier's counters. Any goroutine, before and after
// Close (Notify calls after Close still count in Notifies).
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
// Any goroutine. After Close it still returns the last error of a write made
// before Close; a write that fails because of Close is not recorded.
func (n *Notifier) LastWriteError() error {
	if p := n.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// readFault returns the error a test asked the next read to fail with, or
// nil.
func readFault(n *Notifier) error {
	if f := n.readFault.Load(); f != nil {
		return (*f)()
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
