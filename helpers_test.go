package threadpool_test

import (
	"os"
	"runtime"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

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
