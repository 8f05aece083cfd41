package threadpool

import (
	"context"
	"errors"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// waitReadable blocks in poll(2) until fd is readable.
func waitReadable(t *testing.T, fd int) {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		require.NoError(t, err)
		require.Equal(t, 1, n)
		return
	}
}

func TestExternalLoopCloseDeliversOnCaller(t *testing.T) {
	p, err := New(WithExternalLoop(), WithMaxWorkers(1))
	require.NoError(t, err)
	g := newGate(1)
	var got []error
	_, err = p.Submit(g.fn(0, errors.New("ran")), func(err error) { got = append(got, err) })
	require.NoError(t, err)
	<-g.started
	for i := 0; i < 3; i++ {
		_, err = p.Submit(func() error { return nil }, func(err error) { got = append(got, err) })
		require.NoError(t, err)
	}
	go func() {
		// Close cancels the queued requests first, then waits for the
		// running one: let it finish only once the cancels are done.
		for p.Stats().Canceled < 3 {
			runtime.Gosched()
		}
		g.release()
	}()
	require.NoError(t, p.Close())
	require.Len(t, got, 4, "Close delivered every callback on its caller")
	require.ErrorIs(t, got[0], ErrCanceled, "queued requests are canceled first")
	var ran int
	for _, err := range got {
		if err != nil && err.Error() == "ran" {
			ran++
		}
	}
	require.Equal(t, 1, ran)
	require.Equal(t, -1, p.Fd())
	require.Zero(t, p.RunCompletions())
	require.NoError(t, p.Close())
}

func TestExternalLoopShutdownRunsQueuedWork(t *testing.T) {
	p, err := New(WithExternalLoop(), WithMaxWorkers(2))
	require.NoError(t, err)
	const n = 50
	var errs []error
	for i := 0; i < n; i++ {
		_, err := p.Submit(func() error { return nil }, func(err error) { errs = append(errs, err) })
		require.NoError(t, err)
	}
	require.NoError(t, p.Shutdown(context.Background()))
	require.Len(t, errs, n)
	for _, err := range errs {
		require.NoError(t, err)
	}
}

func TestExternalLoopNestedRunCompletions(t *testing.T) {
	p := newPool(t, WithExternalLoop(), WithMaxWorkers(1))
	g := newGate(3)
	order := []int{}
	for i := 0; i < 3; i++ {
		_, err := p.Submit(g.fn(i, nil), func(error) {
			order = append(order, i)
			if i == 0 {
				// A nested loop iteration delivers the rest of the batch.
				p.RunCompletions()
			}
		})
		require.NoError(t, err)
	}
	g.release()
	require.NoError(t, p.Shutdown(context.Background()))
	require.Equal(t, []int{0, 1, 2}, order)
}
