package threadpool_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/batchio/threadpool"
)

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
