package threadpool_test

import (
	"context"
	"errors"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/batchio/threadpool"
)

// gate holds Funcs until the test opens it; opening twice is harmless.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

func newGate() *gate  { return &gate{ch: make(chan struct{})} }
func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }
func (g *gate) wait() { <-g.ch }

// tally counts the callbacks of numbered requests and keeps their errors.
// Any goroutine.
type tally struct {
	mu   sync.Mutex
	errs map[int][]error
	all  chan int // receives each request number as its callback runs
}

func newTally(capacity int) *tally {
	return &tally{errs: make(map[int][]error), all: make(chan int, capacity)}
}

// cb returns a Callback that records request i.
func (ta *tally) cb(i int) threadpool.Callback {
	return func(err error) {
		ta.mu.Lock()
		ta.errs[i] = append(ta.errs[i], err)
		ta.mu.Unlock()
		ta.all <- i
	}
}

// wait blocks until n more callbacks have run.
func (ta *tally) wait(n int) {
	for range n {
		<-ta.all
	}
}

// got returns the errors request i's callback received.
func (ta *tally) got(i int) []error {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	return append([]error(nil), ta.errs[i]...)
}

// requireOnce checks that request i had exactly one callback and returns its
// error.
func (ta *tally) requireOnce(t testing.TB, i int) error {
	t.Helper()
	errs := ta.got(i)
	require.Len(t, errs, 1, "request %d: callbacks", i)
	return errs[0]
}

// noLeaks checks, when the test ends, that every goroutine started during the
// test has exited. Call it first: later cleanups (pool Close) run before it.
func noLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// newPool makes a pool and closes it when the test ends.
func newPool(t *testing.T, opts ...threadpool.Option) *threadpool.Pool {
	t.Helper()
	p, err := threadpool.New(opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

// counts is the part of Stats that must add up once a pool is closed.
type counts struct {
	Submitted, Completed, Canceled, Panicked, Delivered uint64
}

// countsOf picks the counters out of s.
func countsOf(s threadpool.Stats) counts {
	return counts{
		Submitted: s.Submitted,
		Completed: s.Completed,
		Canceled:  s.Canceled,
		Panicked:  s.Panicked,
		Delivered: s.Delivered,
	}
}

// raceEnabled reports a -race build, where the long tests run smaller.
const raceEnabled = threadpool.RaceBuild

// notifierFds is how many descriptors a Notifier holds: one eventfd, or a
// pipe's two ends.
func notifierFds() int {
	if threadpool.EventfdNotifier {
		return 1
	}
	return 2
}

// openFds counts this process's open file descriptors, or reports -1 where
// there is no /proc/self/fd to count: only Linux has it.
func openFds(t testing.TB) int {
	t.Helper()
	if runtime.GOOS != "linux" {
		return -1
	}
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

// loopMode is one way of running a pool's completion loop.
type loopMode struct {
	name     string
	external bool
	opts     []threadpool.Option
}

// loopModes lists the three completion loops: the default one woken through
// a channel, the default one woken through an eventfd, and the caller's own.
var loopModes = []loopMode{
	{name: "chan"},
	{name: "eventfd", opts: []threadpool.Option{threadpool.WithEventfdLoop()}},
	{name: "external", external: true, opts: []threadpool.Option{threadpool.WithExternalLoop()}},
}

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
