package threadpool

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// spinningPool returns a pool, with an external completion loop that the
// test runs, in which one worker spins, for up to an hour unless opts say
// otherwise: only what the test does ends the spin. The first completion writes the loop's wake-up, so its
// worker parks; the second finds the wake-up pending, and its worker spins
// while both wait for their callbacks.
func spinningPool(t *testing.T, opts ...Option) *Pool {
	t.Helper()
	p := newPool(t, append([]Option{WithExternalLoop(), WithMaxWorkers(1), WithSpin(time.Hour)}, opts...)...)
	_, err := p.Submit(func() error { return nil }, nil)
	require.NoError(t, err)
	eventually(t, func() bool { s := p.Stats(); return s.Completed == 1 && s.IdleWorkers == s.Workers },
		"the worker that woke the loop parks")
	require.False(t, p.isSpinning())
	_, err = p.Submit(func() error { return nil }, nil)
	require.NoError(t, err)
	eventually(t, func() bool { return p.Stats().Spins == 1 }, "the worker that found the wake-up pending spins")
	return p
}

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
	eventually(t, func() bool { return p.Stats().Completed == 3 }, "the request completes")
	require.Equal(t, 3, p.RunCompletions())
	require.Equal(t, 1, p.Stats().Workers)
}

// A spin that nothing ends lasts its bound, then the worker parks.
func TestSpinEndsAtItsBound(t *testing.T) {
	p := spinningPool(t, WithSpin(time.Millisecond))
	eventually(t, func() bool { return p.Stats().IdleWorkers == 1 }, "the spinner parks")
	require.False(t, p.isSpinning())
	require.Equal(t, 2, p.RunCompletions())
}

// SetLimits below the live workers ends a spin while callbacks are still
// pending, and the spinner (or the idle worker) exits.
func TestSetLimitsEndsSpin(t *testing.T) {
	p := spinningPool(t, WithMaxWorkers(2), WithMinWorkers(2))
	require.NoError(t, p.SetLimits(0, 1))
	eventually(t, func() bool { return p.Stats().Workers == 1 }, "a worker exits")
	require.Equal(t, 2, p.RunCompletions())
}

// Close ends a spin and delivers what is pending.
func TestCloseEndsSpin(t *testing.T) {
	p := spinningPool(t)
	n := 0
	_, err := p.Submit(func() error { return nil }, func(error) { n++ })
	require.NoError(t, err)
	require.NoError(t, p.Close())
	require.Equal(t, 1, n)
	require.Zero(t, p.Stats().Workers)
}

// WithSpin(0) turns spinning off: the worker whose completion found the
// wake-up pending parks like the first.
func TestWithSpinZeroParks(t *testing.T) {
	p := newPool(t, WithExternalLoop(), WithMaxWorkers(1), WithSpin(0))
	for i := 1; i <= 2; i++ {
		_, err := p.Submit(func() error { return nil }, nil)
		require.NoError(t, err)
		eventually(t, func() bool { s := p.Stats(); return s.Completed == uint64(i) && s.IdleWorkers == 1 },
			"request %d done and its worker parked", i)
		require.False(t, p.isSpinning())
	}
	require.Equal(t, 2, p.RunCompletions())
}

func TestWithSpinNegative(t *testing.T) {
	_, err := New(WithSpin(-time.Microsecond))
	require.ErrorIs(t, err, ErrInvalidLimits)
}
