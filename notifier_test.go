package threadpool

import (
	"context"
	"errors"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func newNotifier(t *testing.T, opts ...NotifierOption) *Notifier {
	t.Helper()
	n, err := NewNotifier(opts...)
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
	n := newNotifier(t, WithCoalescing(false))
	for i := 0; i < 10; i++ {
		n.Notify()
	}
	require.Equal(t, uint64(10), n.Stats().Writes)
	require.Zero(t, n.Stats().Absorbed)
	require.True(t, n.Clear())
	require.False(t, n.Clear(), "one read takes every pending write")
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

func TestNotifierCloseUnblocksWait(t *testing.T) {
	n, err := NewNotifier()
	require.NoError(t, err)
	done := make(chan error)
	go func() { done <- n.Wait(context.Background()) }()
	require.NoError(t, n.Close())
	require.ErrorIs(t, <-done, ErrClosed)
	require.ErrorIs(t, n.Wait(context.Background()), ErrClosed)
	require.Equal(t, -1, n.Fd())
	n.Notify() // no-op, no panic
	require.False(t, n.Clear())
	require.NoError(t, n.Close(), "Close twice")
}

func TestNotifierWriteErrorLetsNextNotifyRetry(t *testing.T) {
	n := newNotifier(t)
	SetWriteFault(n, func() error { return syscall.EBADF })
	n.Notify()
	require.Equal(t, uint64(1), n.Stats().WriteErrors)
	require.True(t, errors.Is(n.LastWriteError(), syscall.EBADF))
	SetWriteFault(n, nil)
	n.Notify()
	require.Equal(t, uint64(1), n.Stats().Writes, "the failed signal did not stay pending")
	require.True(t, n.Clear())
}

func TestNotifierEAGAINCountsAsWritten(t *testing.T) {
	n := newNotifier(t)
	SetWriteFault(n, func() error { return syscall.EAGAIN })
	n.Notify()
	require.Zero(t, n.Stats().WriteErrors)
	require.Equal(t, uint64(1), n.Stats().Writes)
}
