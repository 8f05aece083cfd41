package threadpool_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/batchio/threadpool"
)

// pollIn waits up to timeout milliseconds (-1: for ever) for fd to become
// readable and reports whether it is.
func pollIn(t testing.TB, fd, timeout int) bool {
	t.Helper()
	require.GreaterOrEqual(t, fd, 0)
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(pfd, timeout)
		if !errors.Is(err, unix.EINTR) {
			require.NoError(t, err)
			return n == 1 && pfd[0].Revents&unix.POLLIN != 0
		}
	}
}

// waitReadable blocks until fd is readable.
func waitReadable(t testing.TB, fd int) {
	t.Helper()
	require.True(t, pollIn(t, fd, -1))
}

// newOneWorkerExternal makes an external-loop pool with one worker, so that
// requests finish in order, and a tally for its callbacks.
func newOneWorkerExternal(t *testing.T) (*threadpool.Pool, *tally) {
	t.Helper()
	return newPool(t, threadpool.WithExternalLoop(), threadpool.WithMaxWorkers(1)), newTally(4)
}

// batchOfThree queues three requests on a one-worker external-loop pool and
// returns once the first two are finished and the third is running, held by
// the gate it returns: the first two are then one batch for the next
// RunCompletions. The second and third report to ta as requests 1 and 2.
func batchOfThree(t *testing.T, p *threadpool.Pool, ta *tally, first threadpool.Callback) *gate {
	t.Helper()
	hold := newGate()
	t.Cleanup(hold.open) // before the pool's Close, which waits for the Func
	started := make(chan struct{})
	_, err := p.Submit(func() error { return nil }, first)
	require.NoError(t, err)
	_, err = p.Submit(func() error { return nil }, ta.cb(1))
	require.NoError(t, err)
	_, err = p.Submit(func() error { close(started); hold.wait(); return nil }, ta.cb(2))
	require.NoError(t, err)
	<-started // one worker: the first two are published by now
	return hold
}

// readable reports whether fd is readable now, without waiting.
func readable(t testing.TB, fd int) bool {
	t.Helper()
	return pollIn(t, fd, 0)
}

// runUntilDelivered drives an external-loop pool until n callbacks in all
// have been delivered. Loop goroutine only.
func runUntilDelivered(t testing.TB, p *threadpool.Pool, n uint64) {
	t.Helper()
	for p.Stats().Delivered < n {
		waitReadable(t, p.Fd())
		p.RunCompletions()
	}
}

// requireRestOfBatch checks, after the first callback of batchOfThree left
// RunCompletions early, that Fd announces the second at once, that the third
// follows once hold opens, and that Stats count all three.
func requireRestOfBatch(t *testing.T, p *threadpool.Pool, ta *tally, hold *gate) {
	t.Helper()
	require.True(t, readable(t, p.Fd()), "the rest of the batch must re-arm Fd")
	require.Equal(t, 1, p.RunCompletions())
	require.NoError(t, ta.requireOnce(t, 1))
	require.Equal(t, uint64(2), p.Stats().Delivered, "the first callback was delivered too")

	hold.open()
	waitReadable(t, p.Fd())
	require.Equal(t, 1, p.RunCompletions())
	require.NoError(t, ta.requireOnce(t, 2))
	require.NoError(t, p.Close())
	require.Equal(t, counts{Submitted: 3, Completed: 3, Delivered: 3}, countsOf(p.Stats()))
}
