package threadpool_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/batchio/threadpool"
)

// injectWriteFault makes n's signal writes fail with EBADF while the flag it
// returns is set, as it is at first.
func injectWriteFault(n *threadpool.Notifier) *atomic.Bool {
	return injectFault(n, threadpool.SetWriteFault, unix.EBADF)
}

// injectReadFault makes n's reads by Wait and Clear fail with EIO while the
// flag it returns is set, as it is at first.
func injectReadFault(n *threadpool.Notifier) *atomic.Bool {
	return injectFault(n, threadpool.SetReadFault, unix.EIO)
}

// injectFault installs with set a fault of n that returns errno while the
// flag it returns is set, as it is at first.
func injectFault(n *threadpool.Notifier, set func(*threadpool.Notifier, func() error), errno error) *atomic.Bool {
	var failing atomic.Bool
	failing.Store(true)
	set(n, func() error {
		if failing.Load() {
			return errno
		}
		return nil
	})
	return &failing
}

// published returns once every request submitted before it to the
// one-worker pool p has been published, wake-up write included: the worker
// publishes a request before it takes the next one.
func published(t testing.TB, p *threadpool.Pool) {
	t.Helper()
	require.NoError(t, p.SubmitCo(context.Background(), func() error { return nil }))
}

// When every write to the default loop's eventfd fails, the loop must still
// be woken for each completion, and Close must still end the loop.
func TestWakeWriteFailsEventfdLoop(t *testing.T) {
	noLeaks(t)
	const n = 200
	p := newPool(t, threadpool.WithEventfdLoop(), threadpool.WithMaxWorkers(4))
	nt := threadpool.LoopNotifier(p)
	require.NotNil(t, nt)
	injectWriteFault(nt)
	ta := newTally(n)
	for i := range n {
		_, err := p.Submit(func() error { return nil }, ta.cb(i))
		require.NoError(t, err)
		if i%10 == 0 {
			ta.wait(1) // some alone, while the loop sleeps in Wait
		}
	}
	ta.wait(n - n/10)
	require.NoError(t, p.Close())
	for i := range n {
		require.NoError(t, ta.requireOnce(t, i))
	}
	s := nt.Stats()
	require.NotZero(t, s.WriteErrors)
	require.Zero(t, s.Writes)
	require.ErrorIs(t, nt.LastWriteError(), unix.EBADF)
	require.Equal(t, counts{Submitted: n, Completed: n, Delivered: n}, countsOf(p.Stats()))
}

// With an external loop a failed write cannot show on Fd: MissedWakeup must
// say so until RunCompletions runs, the next good write must announce
// everything, and Shutdown must not wait for a wake-up that was lost.
func TestWakeWriteFailsExternalLoop(t *testing.T) {
	noLeaks(t)
	p := newPool(t, threadpool.WithExternalLoop(), threadpool.WithMaxWorkers(1))
	failing := injectWriteFault(threadpool.LoopNotifier(p))
	ta := newTally(4)
	require.False(t, p.MissedWakeup())

	_, err := p.Submit(func() error { return nil }, ta.cb(0))
	require.NoError(t, err)
	published(t, p)
	require.False(t, readable(t, p.Fd()))
	require.True(t, p.MissedWakeup())
	require.Equal(t, 1, p.RunCompletions())
	require.False(t, p.MissedWakeup())
	require.False(t, readable(t, p.Fd()))

	// A lost wake-up, then a good one: Fd announces both completions.
	_, err = p.Submit(func() error { return nil }, ta.cb(1))
	require.NoError(t, err)
	published(t, p)
	failing.Store(false)
	_, err = p.Submit(func() error { return nil }, ta.cb(2))
	require.NoError(t, err)
	waitReadable(t, p.Fd())
	runUntilDelivered(t, p, 3)
	require.False(t, p.MissedWakeup())

	// Shutdown waits on the descriptor: a failed write must still end it.
	failing.Store(true)
	hold := newGate()
	t.Cleanup(hold.open)
	_, err = p.Submit(func() error { hold.wait(); return nil }, ta.cb(3))
	require.NoError(t, err)
	go hold.open() // most likely while Shutdown waits
	require.NoError(t, p.Shutdown(context.Background()))
	for i := range 4 {
		require.NoError(t, ta.requireOnce(t, i))
	}
	require.Equal(t, counts{Submitted: 6, Completed: 6, Delivered: 4}, countsOf(p.Stats()))
}

// A Notifier owes the consumer a signal whose write failed: Wait returns for
// it, even when it was already blocked, and Clear takes it; the signal
// written next is still read back by Clear.
func TestNotifierFailedWriteIsOwed(t *testing.T) {
	noLeaks(t)
	n, err := threadpool.NewNotifier()
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, n.Close()) })
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

// When the default loop cannot read its eventfd, it must not end: it delivers
// what is done, counts the failed waits, polls until reads work again, and
// Close still delivers every callback.
func TestWaitReadFailsEventfdLoop(t *testing.T) {
	noLeaks(t)
	const n = 40
	p := newPool(t, threadpool.WithEventfdLoop(), threadpool.WithMaxWorkers(2))
	failing := injectReadFault(threadpool.LoopNotifier(p))
	ta := newTally(n)
	for i := range n / 2 {
		_, err := p.Submit(func() error { return nil }, ta.cb(i))
		require.NoError(t, err)
		if i%5 == 0 {
			ta.wait(1) // some alone, while the loop polls
		}
	}
	ta.wait(n/2 - n/10)
	// The first completion makes the eventfd readable for good, as no read
	// takes it back: the loop's next wait fails at once.
	require.Eventually(t, func() bool { return p.Stats().WaitErrors > 0 }, 10*time.Second, time.Millisecond)

	failing.Store(false)
	for i := n / 2; i < n; i++ {
		_, err := p.Submit(func() error { return nil }, ta.cb(i))
		require.NoError(t, err)
	}
	ta.wait(n / 2)
	failing.Store(true) // Close must not depend on the descriptor either
	require.NoError(t, p.Close())
	for i := range n {
		require.NoError(t, ta.requireOnce(t, i))
	}
	require.Equal(t, counts{Submitted: n, Completed: n, Delivered: n}, countsOf(p.Stats()))
}

// Shutdown with an external loop waits on the eventfd too: a failed read must
// not end it early nor strand a completion.
func TestWaitReadFailsExternalShutdown(t *testing.T) {
	noLeaks(t)
	p := newPool(t, threadpool.WithExternalLoop(), threadpool.WithMaxWorkers(1))
	injectReadFault(threadpool.LoopNotifier(p))
	ta := newTally(1)
	hold := newGate()
	t.Cleanup(hold.open)
	_, err := p.Submit(func() error { hold.wait(); return nil }, ta.cb(0))
	require.NoError(t, err)
	go func() {
		waitForWaitError(p) // Shutdown waits for the Func and polls
		hold.open()
	}()
	require.NoError(t, p.Shutdown(context.Background()))
	require.NoError(t, ta.requireOnce(t, 0))
}

// waitForWaitError returns once a wait of p's loop has failed.
func waitForWaitError(p *threadpool.Pool) {
	for p.Stats().WaitErrors == 0 {
		runtime.Gosched()
	}
}
