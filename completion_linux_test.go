//go:build linux

package threadpool

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestExternalEpollLoop drives a pool made WithExternalLoop from a real epoll
// loop: wait on Fd, call RunCompletions, until every callback has run, all on
// the test goroutine.
func TestExternalEpollLoop(t *testing.T) {
	p := newPool(t, WithExternalLoop(), WithMaxWorkers(8))
	require.GreaterOrEqual(t, p.Fd(), 0)
	flags, err := unix.FcntlInt(uintptr(p.Fd()), unix.F_GETFD, 0)
	require.NoError(t, err)
	require.NotZero(t, flags&unix.FD_CLOEXEC)

	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	require.NoError(t, err)
	defer unix.Close(ep)
	require.NoError(t, unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, p.Fd(),
		&unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(p.Fd())}))

	const n = 500
	results := make([]error, n)
	calls := make([]int, n)
	for i := 0; i < n; i++ {
		want := fmt.Errorf("r%d", i)
		_, err := p.Submit(func() error { return want }, func(err error) {
			results[i] = err
			calls[i]++
		})
		require.NoError(t, err)
	}
	delivered, wakeups := 0, 0
	events := make([]unix.EpollEvent, 4)
	for delivered < n {
		k, err := unix.EpollWait(ep, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		require.NoError(t, err)
		require.Equal(t, 1, k)
		require.Equal(t, int32(p.Fd()), events[0].Fd)
		wakeups++
		delivered += p.RunCompletions()
	}
	require.Equal(t, n, delivered)
	for i := 0; i < n; i++ {
		require.Equal(t, 1, calls[i])
		require.EqualError(t, results[i], fmt.Sprintf("r%d", i))
	}
	s := p.Stats()
	require.Equal(t, uint64(n), s.Delivered)
	require.LessOrEqual(t, s.LoopWakes, uint64(wakeups)+1, "wake-ups are coalesced")
	require.Zero(t, p.RunCompletions(), "nothing left")
}
