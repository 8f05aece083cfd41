package threadpool

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestIdleTimeoutAfterLongWork keeps two workers busy while the reaper
// passes (its own passes, every millisecond, and three made here): they
// must not be retired while busy, and must exit once idle.
func TestIdleTimeoutAfterLongWork(t *testing.T) {
	const timeout = time.Millisecond
	p := newPool(t, WithMaxWorkers(2), WithIdleTimeout(timeout))
	g := newGate(2)
	t.Cleanup(g.release)
	done := make(chan error, 2)
	for i := range 2 {
		_, err := p.Submit(g.fn(i, nil), func(err error) { done <- err })
		require.NoError(t, err)
	}
	<-g.started
	<-g.started
	for range 3 {
		p.reapIdle()
	}
	require.Equal(t, 2, p.Stats().Workers, "busy workers are not retired")
	g.release()
	require.NoError(t, <-done)
	require.NoError(t, <-done)
	eventually(t, func() bool { return p.Stats().Workers == 0 }, "idle workers above min must exit")
}

// TestWorkersAtMinOutliveTheirTimers keeps the minimum of workers through
// many idle timeouts, and they still take work.
func TestWorkersAtMinOutliveTheirTimers(t *testing.T) {
	p := newPool(t, WithMinWorkers(1), WithMaxWorkers(1), WithIdleTimeout(time.Microsecond))
	for range 50 {
		require.NoError(t, p.SubmitCo(t.Context(), func() error { return nil }))
		require.Equal(t, 1, p.Stats().Workers)
	}
}

// TestPollTimeout: the reaper's poll(2) timeout rounds up to whole
// milliseconds, never spins on a tiny idle timeout and never overflows on a
// huge one.
func TestPollTimeout(t *testing.T) {
	for d, want := range map[time.Duration]int{
		time.Nanosecond:              1,
		time.Millisecond:             1,
		1500 * time.Microsecond:      2,
		DefaultIdleTimeout:           10000,
		time.Duration(math.MaxInt64): math.MaxInt32,
	} {
		require.Equal(t, want, pollTimeout(d), "idle timeout %v", d)
	}
}

// TestSubmitHandsALoneRequestToAnIdleWorker: a request submitted while no
// other is queued, running or on its way goes straight to an idle worker:
// from Submit's return it counts as running, and Cancel leaves it to run. A
// request submitted while another runs queues as before, and can be
// canceled.
func TestSubmitHandsALoneRequestToAnIdleWorker(t *testing.T) {
	p := newPool(t, WithMinWorkers(1), WithMaxWorkers(1))
	eventually(t, func() bool { return p.Stats().IdleWorkers == 1 }, "the worker at min goes idle")
	g := newGate(1)
	results := make(chan error, 2)
	lone, err := p.Submit(g.fn(1, errors.New("ran")), func(err error) { results <- err })
	require.NoError(t, err)
	s := p.Stats()
	require.Equal(t, 1, s.Running, "the lone request is the woken worker's")
	require.Equal(t, 0, s.Queued)
	require.Equal(t, 0, s.IdleWorkers)
	require.False(t, p.Cancel(lone), "a request handed to a worker has started")

	require.Equal(t, 1, <-g.started)
	queued, err := p.Submit(func() error { return nil }, func(err error) { results <- err })
	require.NoError(t, err)
	require.Equal(t, 1, p.Stats().Queued, "behind a running request, a request queues")
	require.True(t, p.Cancel(queued))
	g.release()
	got := []error{<-results, <-results}
	require.ErrorIs(t, got[0], ErrCanceled, "the queued request's callback comes first")
	require.EqualError(t, got[1], "ran")
}

// TestFlushHandsTheFirstRequestToAnIdleWorker: a Batch flushed to a pool
// with nothing in progress hands its first request to an idle worker and
// queues the others behind it, in order.
func TestFlushHandsTheFirstRequestToAnIdleWorker(t *testing.T) {
	p := newPool(t, WithMinWorkers(1), WithMaxWorkers(1))
	eventually(t, func() bool { return p.Stats().IdleWorkers == 1 }, "the worker at min goes idle")
	g := newGate(3)
	type result struct {
		i   int
		err error
	}
	order := make(chan result, 3)
	b := p.NewBatch()
	for i := range 3 {
		require.NoError(t, b.Add(g.fn(i, nil), func(err error) { order <- result{i, err} }))
	}
	require.NoError(t, b.Flush())
	s := p.Stats()
	require.Equal(t, 1, s.Running, "the first request is the woken worker's")
	require.Equal(t, 2, s.Queued, "the rest queue behind it")
	g.release()
	for i := range 3 {
		require.Equal(t, i, <-g.started, "requests start in order")
		require.Equal(t, result{i, nil}, <-order, "callbacks come in order, without error")
	}
}

// TestDispatchWakesAtMostMaxTransitWorkers: a burst queued while every
// worker is idle wakes maxTransit of them at once, not one per request; each
// one woken wakes the next as it takes its request, so that all of them run.
// The burst is queued under the pool's lock, as acceptBatch does, so that no
// woken worker arrives before the test looks.
func TestDispatchWakesAtMostMaxTransitWorkers(t *testing.T) {
	const n = 2*maxTransit + 1
	p := newPool(t, WithMinWorkers(n), WithMaxWorkers(n))
	eventually(t, func() bool { return p.Stats().IdleWorkers == n }, "the workers at min go idle")
	g := newGate(n)
	t.Cleanup(g.release) // before the pool's Close, should the test fail
	p.mu.Lock()
	for i := range n {
		e := p.alloc()
		e.fn = g.fn(i, nil)
		p.pending.Add(1)
		p.submitted++
		p.enqueue(e)
	}
	p.dispatch()
	transit, idle := p.transit, len(p.idle)
	p.mu.Unlock()
	require.Equal(t, maxTransit, transit, "workers in transit at once")
	require.Equal(t, n-maxTransit, idle, "workers left idle for the chain to wake")

	for range n {
		<-g.started // the chain wakes every worker: one request each
	}
	g.release()
	require.NoError(t, p.Shutdown(context.Background()))
	s := p.Stats()
	require.Equal(t, uint64(n), s.Completed)
	require.Equal(t, uint64(n), s.Delivered)
}
