package threadpool_test

import (
	"context"
	"encoding/binary"
	"errors"
	"runtime"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/batchio/threadpool"
)

// newNotifier makes a Notifier and closes it when the test ends.
func newNotifier(t *testing.T, opts ...threadpool.NotifierOption) *threadpool.Notifier {
	t.Helper()
	n, err := threadpool.NewNotifier(opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	return n
}

func TestNotifierCoalescesUntilCleared(t *testing.T) {
	n := newNotifier(t)
	for i := 0; i < 100; i++ {
		n.Notify()
	}
	s := n.Stats()
	require.Equal(t, uint64(100), s.Notifies)
	require.Equal(t, uint64(1), s.Writes, "N notifies before a Clear are one write")
	require.Equal(t, uint64(99), s.Absorbed)
	require.True(t, n.Clear())
	require.False(t, n.Clear(), "the signal was taken")
	n.Flush()
	require.Equal(t, uint64(2), n.Stats().Writes, "Notify after Clear writes again")
	require.True(t, n.Clear())
	require.Equal(t, uint64(2), n.Stats().Wakeups)
}

func TestNotifierWithoutCoalescingWritesEveryTime(t *testing.T) {
	n := newNotifier(t, threadpool.WithCoalescing(false))
	for i := 0; i < 10; i++ {
		n.Notify()
	}
	require.Equal(t, uint64(10), n.Stats().Writes)
	require.Zero(t, n.Stats().Absorbed)
	require.True(t, n.Clear())
	require.False(t, n.Clear(), "one read takes every pending write")
}

// A nil option is skipped, as New skips one: NewNotifier(nil) panicked.
func TestNotifierSkipsANilOption(t *testing.T) {
	n := newNotifier(t, nil, threadpool.WithCoalescing(false), nil)
	n.Notify()
	n.Notify()
	require.Equal(t, uint64(2), n.Stats().Writes, "the option between the nils took")
}

func TestNotifierWaitWakesOnNotify(t *testing.T) {
	n := newNotifier(t)
	done := make(chan error)
	go func() { done <- n.Wait(context.Background()) }()
	n.Notify()
	require.NoError(t, <-done)
	n.Notify()
	require.NoError(t, n.Wait(context.Background()), "a signal written before Wait is not missed")
	require.False(t, n.Clear())
}

func TestNotifierWaitHonoursContext(t *testing.T) {
	n := newNotifier(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- n.Wait(ctx) }()
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	require.ErrorIs(t, n.Wait(ctx), context.Canceled)
	// The deadline used to interrupt the wait is gone afterwards.
	n.Notify()
	require.NoError(t, n.Wait(context.Background()))
}

// A Wait whose ctx had ended before the call returns ctx's error even with a
// signal pending, and leaves the signal for the next Wait or Clear.
func TestNotifierWaitEndedContextLeavesSignal(t *testing.T) {
	n := newNotifier(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n.Notify()
	require.ErrorIs(t, n.Wait(ctx), context.Canceled)
	require.True(t, n.Clear(), "the signal is still pending")
	require.False(t, n.Clear())
}

func TestNotifierCloseUnblocksWait(t *testing.T) {
	n, err := threadpool.NewNotifier()
	require.NoError(t, err)
	done := make(chan error)
	go func() { done <- n.Wait(context.Background()) }()
	require.NoError(t, n.Close())
	require.ErrorIs(t, <-done, threadpool.ErrClosed)
	require.ErrorIs(t, n.Wait(context.Background()), threadpool.ErrClosed)
	require.Equal(t, -1, n.Fd())
	n.Notify() // no-op, no panic
	require.False(t, n.Clear())
	require.NoError(t, n.Close(), "Close twice")
}

func TestNotifierWriteErrorLetsNextNotifyRetry(t *testing.T) {
	n := newNotifier(t)
	threadpool.SetWriteFault(n, func() error { return syscall.EBADF })
	n.Notify()
	require.Equal(t, uint64(1), n.Stats().WriteErrors)
	require.True(t, errors.Is(n.LastWriteError(), syscall.EBADF))
	threadpool.SetWriteFault(n, nil)
	n.Notify()
	require.Equal(t, uint64(1), n.Stats().Writes, "the failed signal did not stay pending")
	require.True(t, n.Clear())
}

func TestNotifierEAGAINCountsAsWritten(t *testing.T) {
	n := newNotifier(t)
	threadpool.SetWriteFault(n, func() error { return syscall.EAGAIN })
	n.Notify()
	require.Zero(t, n.Stats().WriteErrors)
	require.Equal(t, uint64(1), n.Stats().Writes)
}

// A Notifier owes the consumer a signal whose write failed: Wait returns for
// it, even when it was already blocked, and Clear takes it; the signal
// written next is still read back by Clear.
func TestNotifierFailedWriteIsOwed(t *testing.T) {
	noLeaks(t)
	n := newNotifier(t)
	failing := injectWriteFault(n)

	n.Notify()
	require.True(t, n.Missed())
	require.False(t, readable(t, n.Fd()))
	require.NoError(t, n.Wait(context.Background()))
	require.False(t, n.Missed())

	errc := make(chan error, 1)
	go func() { errc <- n.Wait(context.Background()) }()
	n.Notify()
	require.NoError(t, <-errc)

	n.Notify()
	failing.Store(false)
	n.Notify()
	require.True(t, readable(t, n.Fd()))
	require.True(t, n.Clear())
	require.False(t, readable(t, n.Fd()), "Clear read the good signal back")
	require.False(t, n.Missed())
	require.False(t, n.Clear())

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, n.Wait(ctx), context.Canceled)
	s := n.Stats()
	require.Equal(t, uint64(3), s.WriteErrors)
	require.Equal(t, uint64(1), s.Writes)
	require.Equal(t, uint64(3), s.Wakeups)
}

// saturate brings an eventfd's counter to its maximum, so that the next
// signal write fails with EAGAIN; it fails with EAGAIN itself when the
// counter is not zero.
func saturate(fd int) error {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], 0xfffffffffffffffe)
	_, err := unix.Write(fd, b[:])
	return err
}

// EAGAIN from a saturated counter means a wake-up is already readable: it is
// no failure, and the completion is delivered.
func TestWakeWriteEAGAINSaturatedCounter(t *testing.T) {
	if !threadpool.EventfdNotifier {
		t.Skip("a Notifier is a pipe pair here: only an eventfd has a counter to saturate")
	}
	noLeaks(t)
	t.Run("external", func(t *testing.T) {
		p := newPool(t, threadpool.WithExternalLoop(), threadpool.WithMaxWorkers(1))
		require.NoError(t, saturate(p.Fd()))
		ta := newTally(1)
		_, err := p.Submit(func() error { return nil }, ta.cb(0))
		require.NoError(t, err)
		published(t, p) // its write met the saturated counter
		require.Equal(t, 1, p.RunCompletions())
		require.NoError(t, ta.requireOnce(t, 0))
		require.False(t, p.MissedWakeup())
		require.False(t, readable(t, p.Fd()), "RunCompletions read the counter back to zero")
		s := threadpool.LoopNotifier(p).Stats()
		require.Zero(t, s.WriteErrors)
		require.Equal(t, uint64(1), s.Writes)
	})
	t.Run("eventfd", func(t *testing.T) {
		p := newPool(t, threadpool.WithEventfdLoop())
		nt := threadpool.LoopNotifier(p)
		// Saturate just before each real write, which then meets EAGAIN
		// unless the loop read the counter in between.
		threadpool.SetWriteFault(nt, func() error { _ = saturate(nt.Fd()); return nil })
		const n = 20
		ta := newTally(n)
		for i := range n {
			_, err := p.Submit(func() error { return nil }, ta.cb(i))
			require.NoError(t, err)
			ta.wait(1)
		}
		require.NoError(t, p.Close())
		require.Zero(t, nt.Stats().WriteErrors)
		require.Nil(t, nt.LastWriteError())
	})
}

// requireCloexec checks that fd is open and close-on-exec.
func requireCloexec(t testing.TB, fd int) {
	t.Helper()
	require.GreaterOrEqual(t, fd, 0)
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	require.NoError(t, err)
	require.NotZero(t, flags&unix.FD_CLOEXEC, "fd %d is not close-on-exec", fd)
}

// Every descriptor the package opens is close-on-exec, and after Close (or
// Shutdown) the process has the descriptors and goroutines it had before, in
// every loop mode, also after work, cancels and a SubmitCo.
func TestAuditFdsAndGoroutines(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the descriptor audit reads /proc/self/fd, which only Linux has")
	}
	noLeaks(t)
	before := openFds(t)

	n, err := threadpool.NewNotifier()
	require.NoError(t, err)
	requireCloexec(t, n.Fd())
	require.Equal(t, before+notifierFds(), openFds(t), "the notifier's descriptors")
	require.NoError(t, n.Close())
	require.Equal(t, -1, n.Fd())
	require.Equal(t, before, openFds(t))

	for _, mode := range loopModes {
		for _, shutdown := range []bool{false, true} {
			p, err := threadpool.New(append(mode.opts, threadpool.WithMinWorkers(2))...)
			require.NoError(t, err)
			if nt := threadpool.LoopNotifier(p); nt != nil {
				requireCloexec(t, nt.Fd())
			}
			if mode.external {
				requireCloexec(t, p.Fd())
				require.Equal(t, threadpool.LoopNotifier(p).Fd(), p.Fd())
			} else {
				require.Equal(t, -1, p.Fd())
			}
			ta := newTally(16)
			for i := range 16 {
				h, err := p.Submit(func() error { return nil }, ta.cb(i))
				require.NoError(t, err)
				p.Cancel(h)
			}
			require.NoError(t, p.SubmitCo(context.Background(), func() error { return nil }))
			if shutdown {
				require.NoError(t, p.Shutdown(context.Background()))
			} else {
				require.NoError(t, p.Close())
			}
			for i := range 16 {
				ta.requireOnce(t, i)
			}
			require.Equal(t, -1, p.Fd())
			require.Equal(t, before, openFds(t), "%s: descriptors left open", mode.name)
			require.Zero(t, p.Stats().Workers)
		}
	}
}

// A signal still owed when the Notifier is closed is owed to nobody: Missed
// is false from Close on, as Fd is -1 and Wait returns ErrClosed.
func TestNotifierMissedFalseAfterClose(t *testing.T) {
	n := notifierOwingAFailedWrite(t)
	require.NoError(t, n.Close())
	require.False(t, n.Missed())
	require.ErrorIs(t, n.Wait(context.Background()), threadpool.ErrClosed)
}

// A Notify that passed the closed check just before Close finds the
// descriptor closed when it writes: it does nothing, as a Notify after Close
// does, and is no write error.
func TestNotifyRacingCloseIsNoWriteError(t *testing.T) {
	noLeaks(t)
	n := newNotifier(t)
	require.NoError(t, n.Close())
	threadpool.SignalPastClose(n)
	require.Zero(t, n.Stats().WriteErrors)
	require.NoError(t, n.LastWriteError())
	require.False(t, n.Missed())
}

// Clear counts a signal whose write failed as pending: it takes it, reports
// true, and counts the wake-up, though nothing was written to the
// descriptor.
func TestNotifierClearTakesAFailedWrite(t *testing.T) {
	n := notifierOwingAFailedWrite(t)
	require.False(t, readable(t, n.Fd()))
	require.True(t, n.Clear(), "the failed write is owed to the consumer")
	require.False(t, n.Missed())
	require.False(t, n.Clear())
	s := n.Stats()
	require.Equal(t, [3]uint64{1, 0, 1}, [3]uint64{s.WriteErrors, s.Writes, s.Wakeups})
}

// notifierOwingAFailedWrite returns a Notifier whose one signal write
// failed: Missed reports it, and every later write fails too.
func notifierOwingAFailedWrite(t *testing.T) *threadpool.Notifier {
	t.Helper()
	noLeaks(t)
	n := newNotifier(t)
	injectWriteFault(n)
	n.Notify()
	require.True(t, n.Missed())
	return n
}
