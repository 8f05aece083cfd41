package threadpool

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReaperRetiresOnlyWorkersIdleSinceItsLastPass makes the reaper's passes
// by hand (its own pass is an hour away): a worker is retired at the first
// pass that finds it idle with the same count of requests as the previous
// one, never at the first pass after it started or after it last took a
// request, so that it exits between one and two idle timeouts after it went
// idle.
func TestReaperRetiresOnlyWorkersIdleSinceItsLastPass(t *testing.T) {
	p := newPool(t, WithMaxWorkers(1), WithIdleTimeout(time.Hour))
	roundTrip := func() {
		t.Helper()
		require.NoError(t, p.SubmitCo(t.Context(), func() error { return nil }))
		eventually(t, func() bool { return p.Stats().IdleWorkers == 1 }, "the worker must go idle")
	}
	roundTrip()
	p.reapIdle()
	require.Equal(t, 1, p.Stats().Workers, "retired at the first pass after it started")
	roundTrip()
	p.reapIdle()
	require.Equal(t, 1, p.Stats().Workers, "retired at the first pass after it took a request")
	p.reapIdle()
	s := p.Stats()
	require.Zero(t, s.Workers, "idle since the previous pass, yet kept")
	require.Zero(t, s.IdleWorkers)
	require.NoError(t, p.SubmitCo(t.Context(), func() error { return nil }), "a new worker takes work")
}

// TestLoneRequestsReuseTheMostRecentlyIdleWorker: a lone request goes to the
// most recently idle worker, so that a pool that needs one worker at a time
// keeps reusing it and the reaper retires the others; taking the longest
// idle one would keep every worker busy now and then, and none would retire.
func TestLoneRequestsReuseTheMostRecentlyIdleWorker(t *testing.T) {
	p := newPool(t, WithMaxWorkers(2), WithIdleTimeout(time.Hour), WithSpin(0))
	g := newGate(2)
	for i := range 2 {
		_, err := p.Submit(g.fn(i, nil), nil)
		require.NoError(t, err)
	}
	<-g.started
	<-g.started
	g.release()
	eventually(t, func() bool { return p.Stats().IdleWorkers == 2 }, "both workers go idle")
	p.reapIdle() // the first pass notes what each worker took
	for range 2 {
		require.NoError(t, p.SubmitCo(t.Context(), func() error { return nil }))
		eventually(t, func() bool { return p.Stats().IdleWorkers == 2 }, "the worker goes idle again")
	}
	p.reapIdle()
	require.Equal(t, 1, p.Stats().Workers, "the worker idle since the last pass is retired")
}
