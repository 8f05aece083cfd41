package threadpool

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// handFixture is a pool whose workers are all busy, with a request "head"
// and n more queued behind it. free then releases the first worker: it
// takes head, which runs headFn, and, the other workers still busy, its
// share of the n into its hand.
type handFixture struct {
	t        *testing.T
	p        *Pool
	blockers []*gate // one per worker, each holding it busy
	handles  []Handle
	ran      []atomic.Bool
	runs     []chan struct{} // closed as each request runs
	results  chan handResult // every callback, head's as id -1
	started  chan struct{}   // closed as head starts
}

type handResult struct {
	id  int
	err error
}

func newHandFixture(t *testing.T, workers, n int, headFn Func) *handFixture {
	t.Helper()
	f := &handFixture{
		t:       t,
		p:       newPool(t, WithMaxWorkers(workers), WithSpin(0)),
		handles: make([]Handle, n),
		ran:     make([]atomic.Bool, n),
		runs:    make([]chan struct{}, n),
		results: make(chan handResult, n+1),
		started: make(chan struct{}),
	}
	for i := range workers {
		g := newGate(1)
		f.blockers = append(f.blockers, g)
		t.Cleanup(g.release)
		_, err := f.p.Submit(g.fn(i, nil), nil)
		require.NoError(t, err)
		<-g.started
	}
	_, err := f.p.Submit(func() error {
		close(f.started)
		return headFn()
	}, func(err error) { f.results <- handResult{-1, err} })
	require.NoError(t, err)
	for i := range n {
		f.runs[i] = make(chan struct{})
		h, err := f.p.Submit(func() error {
			f.ran[i].Store(true)
			close(f.runs[i])
			return nil
		}, func(err error) { f.results <- handResult{i, err} })
		require.NoError(t, err)
		f.handles[i] = h
	}
	return f
}

// waitingHandFixture is newHandFixture with a head that waits for the
// returned gate, opened at the latest as the test ends, before the pool's
// Close, should the test fail.
func waitingHandFixture(t *testing.T, workers, n int) (*handFixture, *gate) {
	proceed := newGate(0)
	f := newHandFixture(t, workers, n, func() error {
		<-proceed.open
		return nil
	})
	t.Cleanup(proceed.release)
	return f, proceed
}

// free releases the first worker, which takes head (and perhaps a hand),
// and waits until head runs.
func (f *handFixture) free() {
	f.blockers[0].release()
	<-f.started
}

// inHand returns the requests held in hands and how many hands hold some.
func (f *handFixture) inHand() (int, int) {
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	return int(f.p.inHand.Load()), len(f.p.hands)
}

// collect waits for n callbacks (head's included, if it comes) and returns
// their errors by id, failing if they do not all come within a generous
// bound: a request stranded in a hand never completes.
func (f *handFixture) collect(n int) map[int]error {
	f.t.Helper()
	got := make(map[int]error)
	timeout := time.After(30 * time.Second)
	for len(got) < n {
		select {
		case r := <-f.results:
			got[r.id] = r.err
		case <-timeout:
			f.t.Fatalf("%d callbacks of %d after 30s: a request is stranded", len(got), n)
		}
	}
	return got
}

func TestHandIsTakenOnlyWhenEveryWorkerIsBusy(t *testing.T) {
	f, proceed := waitingHandFixture(t, 2, 6)
	f.free()
	held, hands := f.inHand()
	require.Equal(t, 3, held, "a share of the queue: 6 queued over 2 workers")
	require.Equal(t, 1, hands)
	s := f.p.Stats()
	require.Equal(t, 6, s.Queued, "requests in a hand count as queued")
	require.Equal(t, 2, s.Running)

	proceed.release()
	f.blockers[1].release()
	got := f.collect(7)
	for i := range 6 {
		require.NoError(t, got[i])
		require.True(t, f.ran[i].Load())
	}
	eventually(t, func() bool { held, hands := f.inHand(); return held == 0 && hands == 0 },
		"hands are dropped once played")
}

func TestCancelTakesARequestFromAHand(t *testing.T) {
	f, proceed := waitingHandFixture(t, 1, 4)
	f.free()
	held, _ := f.inHand()
	require.Equal(t, 4, held)

	require.True(t, f.p.Cancel(f.handles[2]), "a request in a hand has not started")
	require.False(t, f.p.Cancel(f.handles[2]), "canceled once")
	require.Equal(t, 3, f.p.Stats().Queued)
	proceed.release()
	got := f.collect(5)
	for i := range 4 {
		if i == 2 {
			require.ErrorIs(t, got[i], ErrCanceled)
			require.False(t, f.ran[i].Load(), "a canceled request never runs")
			continue
		}
		require.NoError(t, got[i])
		require.True(t, f.ran[i].Load())
		require.False(t, f.p.Cancel(f.handles[i]), "a finished request cannot be canceled")
	}
}

func TestCloseCancelsWhatHandsHold(t *testing.T) {
	f, proceed := waitingHandFixture(t, 1, 4)
	f.free()
	closed := make(chan error, 1)
	go func() { closed <- f.p.Close() }()
	// The canceled requests are delivered while head still runs.
	got := f.collect(4)
	for i := range 4 {
		require.ErrorIs(t, got[i], ErrCanceled)
		require.False(t, f.ran[i].Load())
	}
	proceed.release()
	require.NoError(t, <-closed)
	require.NoError(t, f.collect(1)[-1])
	held, hands := f.inHand()
	require.Zero(t, held)
	require.Zero(t, hands)
}

func TestIdleWorkerTakesFromTheHandOfABlockedOne(t *testing.T) {
	// head waits for request 0, which sits in the hand of head's own
	// worker: the other worker must take it from there before it parks.
	var f *handFixture
	f = newHandFixture(t, 2, 4, func() error {
		select {
		case <-f.runs[0]:
			return nil
		case <-time.After(30 * time.Second):
			return errors.New("request 0 never ran: stranded in a hand")
		}
	})
	f.free()
	f.p.mu.Lock()
	hands := len(f.p.hands)
	var hand []*element
	if hands > 0 {
		hand = append(hand, f.p.hands[0].hand[:f.p.hands[0].nhand]...)
	}
	f.p.mu.Unlock()
	require.Equal(t, 1, hands)
	require.Len(t, hand, 2, "a share of the queue: 4 queued over 2 workers")
	require.Same(t, f.handles[0].e, hand[0], "request 0 is in head's worker's hand")

	f.blockers[1].release()
	got := f.collect(5)
	for id, err := range got {
		require.NoError(t, err, "request %d", id)
	}
}

func TestShutdownFromAFuncRunsItsOwnHand(t *testing.T) {
	var p *Pool
	f := newHandFixture(t, 1, 4, func() error {
		return p.Shutdown(context.Background())
	})
	p = f.p
	f.free()
	got := f.collect(5)
	require.NoError(t, got[-1], "Shutdown from the Func whose worker holds the rest")
	for i := range 4 {
		require.NoError(t, got[i])
		require.True(t, f.ran[i].Load())
	}
}

func TestGoexitPutsTheHandBackOnTheQueue(t *testing.T) {
	f := newHandFixture(t, 1, 4, func() error {
		runtime.Goexit()
		return nil
	})
	f.free()
	got := f.collect(5)
	var pe *PanicError
	require.ErrorAs(t, got[-1], &pe)
	require.ErrorIs(t, got[-1], ErrGoexit)
	for i := range 4 {
		require.NoError(t, got[i], "request %d, left in the hand of a worker that exited", i)
		require.True(t, f.ran[i].Load())
	}
	// A worker drops its played hand only when it next takes mu, which may
	// come after the last callback: Close returns once every worker has left.
	require.NoError(t, f.p.Close())
	held, hands := f.inHand()
	require.Zero(t, held)
	require.Zero(t, hands)
}

// A worker freed while another's hand holds requests takes those first:
// they were queued before the queue's. Here head waits for request 0, in
// head's worker's hand; the freed worker must run 0 before 2 and 3, queued
// after it, and 3 waits for 0 too: taking the queue first, it would block
// in 3 and nothing would run 0.
func TestHandIsTakenBeforeNewerQueuedRequests(t *testing.T) {
	p := newPool(t, WithMaxWorkers(2), WithSpin(0))
	gA, gB := newGate(1), newGate(1)
	t.Cleanup(gA.release)
	t.Cleanup(gB.release)
	for _, g := range []*gate{gA, gB} {
		_, err := p.Submit(g.fn(0, nil), nil)
		require.NoError(t, err)
		<-g.started
	}
	ran0 := make(chan struct{})
	waitFor0 := func() error {
		select {
		case <-ran0:
			return nil
		case <-time.After(30 * time.Second):
			return errors.New("request 0 never ran: newer requests went first")
		}
	}
	results := make(chan error, 5)
	cb := func(err error) { results <- err }
	headStarted := make(chan struct{})
	_, err := p.Submit(func() error { close(headStarted); return waitFor0() }, cb)
	require.NoError(t, err)
	for _, fn := range []Func{
		func() error { close(ran0); return nil },
		func() error { return nil },
		func() error { return nil },
		waitFor0,
	} {
		_, err = p.Submit(fn, cb)
		require.NoError(t, err)
	}
	gA.release()
	<-headStarted
	held, _ := (&handFixture{p: p}).inHand()
	require.Equal(t, 2, held, "head's worker took 0 and 1 into its hand")
	gB.release()
	for range 5 {
		require.NoError(t, <-results)
	}
}

// TestGoexitRequeuesTheHandInOrderAheadOfTheQueue: a worker whose Func calls
// runtime.Goexit puts the requests of its hand back at the front of the
// queue, in their order, ahead of those queued after them: they were queued
// first. With one worker, the one that replaces it runs them in that order.
func TestGoexitRequeuesTheHandInOrderAheadOfTheQueue(t *testing.T) {
	const n = maxHand + 1 // maxHand go into the hand, the last stays queued
	p := newPool(t, WithMaxWorkers(1), WithSpin(0))
	blocker := newGate(1)
	t.Cleanup(blocker.release)
	_, err := p.Submit(blocker.fn(0, nil), nil)
	require.NoError(t, err)
	<-blocker.started
	headDone := make(chan error, 1)
	_, err = p.Submit(func() error { runtime.Goexit(); return nil }, func(err error) { headDone <- err })
	require.NoError(t, err)
	order := make(chan int, n)
	for i := range n {
		_, err := p.Submit(func() error { order <- i; return nil }, nil)
		require.NoError(t, err)
	}
	// The worker takes head and, alone and busy, a hand of the next ones.
	blocker.release()
	require.ErrorIs(t, <-headDone, ErrGoexit)
	for i := range n {
		require.Equal(t, i, <-order, "requests run in the order they were queued")
	}
}

// TestNoHandIsTakenWhileAWorkerIsIdle: a worker takes a hand only when no
// other worker is idle (or may start). A burst on a pool of idle workers,
// at its maximum, wakes maxTransit of them at once and leaves one idle: the
// first to arrive must leave the queue to it, not take a hand. The arrivals
// then alternate (one fills a hand of one, the next takes it), so that with
// every worker busy the queue holds all that waits, and no hand any.
func TestNoHandIsTakenWhileAWorkerIsIdle(t *testing.T) {
	const n = maxTransit + 2 // one is handed the first request, one stays idle
	p := newPool(t, WithMinWorkers(n), WithMaxWorkers(n), WithSpin(0))
	eventually(t, func() bool { return p.Stats().IdleWorkers == n }, "the workers at min go idle")
	g := newGate(2 * n)
	t.Cleanup(g.release)
	b := p.NewBatch()
	for i := range 2 * n {
		require.NoError(t, b.Add(g.fn(i, nil), nil))
	}
	require.NoError(t, b.Flush())
	for range n {
		<-g.started
	}
	p.mu.Lock()
	queued, held := p.queued, p.inHand.Load()
	p.mu.Unlock()
	require.Zero(t, held, "requests left in a hand")
	require.Equal(t, n, queued)
	g.release()
	eventually(t, func() bool { return p.Stats().Completed == 2*n }, "every request runs")
}

// TestNoHandIsTakenWhileAWorkerMayStart: a worker takes a hand only when
// every worker is busy at the maximum; below it, the queue is left to the
// workers that may still start. A burst on a new pool, far below its
// maximum, starts maxTransit workers, each of which finds the queue long and
// every other worker busy: none may take a hand. The Funcs hold their
// workers, so a worker that took a hand would still be listed among the
// hands once every request has started.
func TestNoHandIsTakenWhileAWorkerMayStart(t *testing.T) {
	const n = 10 * maxTransit
	p := newPool(t, WithMaxWorkers(2*n), WithSpin(0))
	g := newGate(n)
	t.Cleanup(g.release)
	b := p.NewBatch()
	for i := range n {
		require.NoError(t, b.Add(g.fn(i, nil), nil))
	}
	require.NoError(t, b.Flush())
	for range n {
		<-g.started
	}
	p.mu.Lock()
	hands, held := len(p.hands), p.inHand.Load()
	p.mu.Unlock()
	require.Zero(t, hands, "a worker took a hand while more workers could start")
	require.Zero(t, held)
	g.release()
	eventually(t, func() bool { return p.Stats().Completed == n }, "every request runs")
}
