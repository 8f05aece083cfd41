package threadpool

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// spinningPool returns a pool, with an external completion loop that the
// test runs, in which one worker spins, for up to an hour and whatever else
// runs on its processor, unless opts say otherwise: only what the test does
// ends the spin. The worker that ends a round of spinRound requests spins
// while they wait for their callbacks.
func spinningPool(t *testing.T, opts ...Option) *Pool {
	t.Helper()
	base := []Option{WithExternalLoop(), WithMaxWorkers(1), WithSpin(time.Hour), withSpinTurn(time.Hour)}
	p := newPool(t, append(base, opts...)...)
	submitRound(t, p, spinRound)
	eventually(t, func() bool { return p.Stats().Spins == 1 }, "the worker that ends the round spins")
	return p
}

// submitRound submits a round of n empty requests to p, whose loop the test
// runs and has not run: one request, which wakes the loop, and once its
// worker has parked, the other n-1 in one Batch, whose completions find the
// wake-up pending. Workers that run requests of the test's own meanwhile
// stay busy throughout.
func submitRound(t *testing.T, p *Pool, n int) {
	t.Helper()
	_, err := p.Submit(func() error { return nil }, nil)
	require.NoError(t, err)
	eventually(t, func() bool { s := p.Stats(); return s.Completed == 1 && s.IdleWorkers+s.Running == s.Workers },
		"the worker that woke the loop parks")
	require.False(t, p.isSpinning())
	b := p.NewBatch()
	for range n - 1 {
		require.NoError(t, b.Add(func() error { return nil }, nil))
	}
	require.NoError(t, b.Flush())
}

// spinRound is the size of the rounds that make a worker spin in these
// tests: the fewest that do, one request that wakes the loop and one whose
// completion finds that wake-up pending.
const spinRound = 2

// withSpinTurn sets the longest turn of a spin (spin.go).
func withSpinTurn(d time.Duration) Option { return func(c *config) { c.spinTurn = d } }

func (p *Pool) isSpinning() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.spinner != nil
}

// A request queued while the worker spins is taken by it: with one worker
// and an hour-long spin, nothing else could run it.
func TestSpinnerTakesTheNextRequest(t *testing.T) {
	p := spinningPool(t)
	require.True(t, p.isSpinning())
	s := p.Stats()
	require.Equal(t, 1, s.Workers)
	require.Zero(t, s.IdleWorkers, "a spinning worker is not idle")
	ran := make(chan struct{})
	_, err := p.Submit(func() error { close(ran); return nil }, nil)
	require.NoError(t, err)
	<-ran
	require.Equal(t, uint64(1), p.Stats().SpinHits, "the spin paid off")
	eventually(t, func() bool { return p.Stats().Completed == spinRound+1 }, "the request completes")
	require.Equal(t, spinRound+1, p.RunCompletions())
	require.Equal(t, 1, p.Stats().Workers)
}

// A spin that nothing ends lasts its bound, then the worker parks.
func TestSpinEndsAtItsBound(t *testing.T) {
	p := spinningPool(t, WithSpin(time.Millisecond))
	eventually(t, func() bool { return p.Stats().IdleWorkers == 1 }, "the spinner parks")
	require.False(t, p.isSpinning())
	require.Equal(t, spinRound, p.RunCompletions())
	// The next request finds the worker parked: it wakes it, and the spin
	// that came before stays in vain.
	ran := make(chan struct{})
	_, err := p.Submit(func() error { close(ran); return nil }, nil)
	require.NoError(t, err)
	<-ran
	s := p.Stats()
	require.Equal(t, uint64(1), s.Spins)
	require.Zero(t, s.SpinHits, "a spin that ran out counted as paid off")
}

// A spin whose processor ran other goroutines ends once it goes quiet, long
// before its bound: with one processor, the test's goroutine holds it for a
// millisecond, then waits; the spinner's turn was that long, its next one is
// short, and it parks.
func TestSpinEndsWhenItsProcessorIsBusy(t *testing.T) {
	oneProcessor(t)
	p := spinningPool(t, withSpinTurn(maxSpinTurn))
	for start := time.Now(); time.Since(start) < time.Millisecond; {
		// Busy: the spinner cannot run on the one processor meanwhile.
	}
	eventually(t, func() bool { return p.Stats().IdleWorkers == 1 }, "the spinner parks")
	require.False(t, p.isSpinning())
	require.Equal(t, uint64(1), p.Stats().Spins)
	require.Equal(t, spinRound, p.RunCompletions())
}

// SetLimits below the live workers ends a spin while callbacks are still
// pending, and the spinner (or the idle worker) exits.
func TestSetLimitsEndsSpin(t *testing.T) {
	p := spinningPool(t, WithMaxWorkers(2), WithMinWorkers(2))
	require.NoError(t, p.SetLimits(0, 1))
	eventually(t, func() bool { return p.Stats().Workers == 1 }, "a worker exits")
	require.Equal(t, spinRound, p.RunCompletions())
}

// SetLimits ends a spin whatever the new limits.
func TestSetLimitsRaisingMaxEndsSpin(t *testing.T) {
	p := spinningPool(t)
	require.True(t, p.isSpinning())
	require.NoError(t, p.SetLimits(0, 2))
	require.False(t, p.isSpinning())
	require.Equal(t, spinRound, p.RunCompletions())
}

// Close ends a spin, and delivers what is pending.
func TestCloseEndsSpin(t *testing.T) {
	p := spinningPool(t)
	require.NoError(t, p.Close())
	s := p.Stats()
	require.Zero(t, s.Workers)
	require.Equal(t, uint64(spinRound), s.Delivered)
}

// A lone request, whose completion wakes the loop, ends with its worker
// parked, as does a round that would make it spin WithSpin(0).
func TestNoSpin(t *testing.T) {
	for _, c := range []struct {
		name  string
		round int
		opts  []Option
	}{
		{"lone request", 1, nil},
		{"WithSpin(0)", spinRound, []Option{WithSpin(0)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newPool(t, append([]Option{WithExternalLoop(), WithMaxWorkers(1)}, c.opts...)...)
			submitRound(t, p, c.round)
			eventually(t, func() bool { s := p.Stats(); return s.Completed == uint64(c.round) && s.IdleWorkers == 1 },
				"the round done and its worker parked")
			require.Zero(t, p.Stats().Spins)
			require.Equal(t, c.round, p.RunCompletions())
		})
	}
}

func TestWithSpinNegative(t *testing.T) {
	_, err := New(WithSpin(-time.Microsecond))
	require.ErrorIs(t, err, ErrInvalidLimits)
}

// TestSpinWhileOthersRun: a worker that finds the queue empty spins while
// one other worker runs a request, and not while two or more do, however
// many requests wait for their callbacks.
func TestSpinWhileOthersRun(t *testing.T) {
	for _, c := range []struct {
		running int    // workers blocked in a request meanwhile
		spins   uint64 // spins of the worker that runs the round
	}{
		{1, 1},
		{2, 0},
	} {
		t.Run(fmt.Sprintf("running=%d", c.running), func(t *testing.T) {
			p := newPool(t, WithExternalLoop(), WithMaxWorkers(c.running+1), WithSpin(time.Millisecond), withSpinTurn(time.Hour))
			blocker := newGate(c.running)
			t.Cleanup(blocker.release)
			for i := range c.running {
				_, err := p.Submit(blocker.fn(i, nil), nil)
				require.NoError(t, err)
				<-blocker.started
			}
			// The last worker runs a round while the others run on,
			// and then spins for a millisecond, or not.
			submitRound(t, p, spinRound+1)
			eventually(t, func() bool { s := p.Stats(); return s.Completed == spinRound+1 && s.IdleWorkers == 1 },
				"the last worker parks again")
			require.Equal(t, c.spins, p.Stats().Spins)
			blocker.release()
		})
	}
}
