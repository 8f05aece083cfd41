package threadpool

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// deliverer names the goroutine a Callback runs on: one of p's workers, the
// pool's completion goroutine, or neither. Called from the Callback.
func deliverer(p *Pool) string {
	id := curGoroutineID()
	switch {
	case p.loopGoid.Load() == id:
		return "loop"
	case func() bool { _, ok := p.workerIDs.Load(id); return ok }():
		return "worker"
	}
	return "other"
}

// waitsForAWakeUp reports whether goroutine id is parked on a pool's wake-up
// channel, from a dump of every goroutine's stack.
func waitsForAWakeUp(id uint64) bool {
	if id == 0 {
		return false
	}
	buf := make([]byte, 1<<20)
	dump := string(buf[:runtime.Stack(buf, true)])
	for _, g := range strings.Split(dump, "\n\n") {
		if strings.HasPrefix(g, fmt.Sprintf("goroutine %d [chan receive", id)) {
			return strings.Contains(g, ".waitWake(")
		}
	}
	return false
}

// loopParks waits until p's completion goroutine, just started, parks for
// its first wake-up: a request that finishes while it looks at the done
// stack first is delivered by it.
func loopParks(t *testing.T, p *Pool) {
	t.Helper()
	eventually(t, func() bool { return waitsForAWakeUp(p.loopGoid.Load()) }, "the completion goroutine parks")
}

// letGo waits until whoever delivered the last batch has let go of it and,
// if a worker, has come back to the pool (where it woke the loop for what
// was pushed meanwhile, and counts as a worker again): a request that
// finishes before then is delivered by the one delivering, or by the
// completion goroutine, not by its worker.
func letGo(t *testing.T, p *Pool) {
	t.Helper()
	eventually(t, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return !p.delivering.Load() && p.lent == 0
	}, "the batch ends")
}

// receive returns what ch carries, failing the test after 30s.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		require.FailNow(t, "timed out waiting: "+what)
		panic("unreachable")
	}
}

// The worker that finishes the only pending request delivers its callback
// itself: no wake-up reaches the completion goroutine. With two requests
// pending, the first to finish wakes the completion goroutine, which
// delivers it.
func TestLoneRequestIsDeliveredByItsWorker(t *testing.T) {
	p := newPool(t)
	loopParks(t, p)
	on := make(chan string, 1)
	for range 100 {
		_, err := p.Submit(func() error { return nil }, func(error) { on <- deliverer(p) })
		require.NoError(t, err)
		require.Equal(t, "worker", receive(t, on, "a lone callback"))
		letGo(t, p)
	}
	require.Zero(t, p.Stats().LoopWakes, "the completion goroutine was never woken")

	g := newGate(2)
	t.Cleanup(g.release)
	both := make(chan string, 2)
	for i := range 2 {
		_, err := p.Submit(g.fn(i, nil), func(error) { both <- deliverer(p) })
		require.NoError(t, err)
	}
	<-g.started
	<-g.started
	g.release()
	first, second := receive(t, both, "a callback"), receive(t, both, "a callback")
	require.Contains(t, []string{first, second}, "loop",
		"the first of two pending requests to finish wakes the completion goroutine")
	require.NotContains(t, []string{first, second}, "other")
}

// Other loop kinds never deliver on a worker: an external loop delivers on
// its caller, and an eventfd-woken one is measured without it.
func TestOnlyTheChannelLoopLetsWorkersDeliver(t *testing.T) {
	p := newPool(t, withLoopWake(wakeEventfd))
	on := make(chan string, 1)
	for range 20 {
		_, err := p.Submit(func() error { return nil }, func(error) { on <- deliverer(p) })
		require.NoError(t, err)
		require.Equal(t, "loop", receive(t, on, "a callback"))
	}
}

// A Callback that its worker delivers may wait for a Func, through SubmitCo
// or a channel, even with one worker at most: while it delivers, the worker
// is the loop and not a worker, so another one starts.
func TestCallbackDeliveredByAWorkerMayWaitForAFunc(t *testing.T) {
	p := newPool(t, WithMaxWorkers(1))
	loopParks(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		on            string
		coErr, chErr  error
		workersInside int
	}
	res := make(chan result, 1)
	_, err := p.Submit(func() error { return nil }, func(error) {
		r := result{on: deliverer(p)}
		r.coErr = p.SubmitCo(ctx, func() error { return nil })
		ran := make(chan struct{})
		_, r.chErr = p.Submit(func() error { close(ran); return nil }, nil)
		select {
		case <-ran:
		case <-ctx.Done():
			r.chErr = ctx.Err()
		}
		r.workersInside = p.Stats().Workers
		res <- r
	})
	require.NoError(t, err)
	r := receive(t, res, "the callback")
	require.Equal(t, "worker", r.on)
	require.NoError(t, r.coErr, "SubmitCo from the callback got a worker")
	require.NoError(t, r.chErr, "a Func the callback waits for ran")
	require.Equal(t, 2, r.workersInside, "the delivering worker, and one other started for the Funcs")
	eventually(t, func() bool { return p.Stats().Workers <= 1 },
		"back above max, one of the two workers exits")
}

// workersAfterALoneCallback submits a lone request to p, whose completion
// goroutine is parked: its worker delivers the Callback, which runs body
// (with a context that ends after 30s) and reads Stats().Workers then. It
// returns that count.
func workersAfterALoneCallback(t *testing.T, p *Pool, body func(ctx context.Context) error) int {
	t.Helper()
	loopParks(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		on      string
		err     error
		workers int
	}
	res := make(chan result, 1)
	_, err := p.Submit(func() error { return nil }, func(error) {
		r := result{on: deliverer(p)}
		if r.err = body(ctx); r.err == nil {
			r.workers = p.Stats().Workers
		}
		res <- r
	})
	require.NoError(t, err)
	r := receive(t, res, "the callback")
	require.Equal(t, "worker", r.on)
	require.NoError(t, r.err)
	return r.workers
}

// A worker delivering as the loop is still a live worker goroutine: Stats
// counts it, so that Workers does not drop by one for every lone request,
// and SetLimits counts it toward a raised minimum instead of starting
// another worker beside it.
func TestWorkerDeliveringCountsAmongLiveWorkers(t *testing.T) {
	p := newPool(t)
	var before int
	after := workersAfterALoneCallback(t, p, func(context.Context) error {
		before = p.Stats().Workers
		return p.SetLimits(1, DefaultMaxWorkers)
	})
	require.Equal(t, 1, before, "the worker delivering is a live worker")
	require.Equal(t, 1, after, "SetLimits started a second worker for a minimum of one")
	letGo(t, p)
	require.Equal(t, 1, p.Stats().Workers)
}

// The reaper counts the worker delivering as the loop toward the minimum
// too: an idle worker above it is retired while that one delivers. The
// Callback starts the idle worker (its SubmitCo needs one) and makes the
// reaper's passes by hand, its own being an hour away.
func TestReaperCountsTheWorkerDelivering(t *testing.T) {
	p := newPool(t, WithIdleTimeout(time.Hour))
	workers := workersAfterALoneCallback(t, p, func(ctx context.Context) error {
		if err := p.SubmitCo(ctx, func() error { return nil }); err != nil {
			return err
		}
		for p.Stats().IdleWorkers != 1 {
			if err := ctx.Err(); err != nil {
				return err
			}
			runtime.Gosched() // the other worker goes idle
		}
		if err := p.SetLimits(1, DefaultMaxWorkers); err != nil {
			return err
		}
		p.reapIdle() // notes the idle worker's count
		p.reapIdle() // finds it unchanged
		return nil
	})
	require.Equal(t, 1, workers, "an idle worker above the minimum of one was kept")
}

// A worker whose Func calls runtime.Goexit is replaced only below the
// minimum, and the worker delivering as the loop counts toward it: with a
// minimum of one, kept by the deliverer, no replacement starts. The Callback
// makes the worker that runs the exiting Func (one starts for it, as the
// deliverer is out of the count toward max) and waits until it has exited.
func TestGoexitReplacementCountsTheWorkerDelivering(t *testing.T) {
	p := newPool(t)
	workers := workersAfterALoneCallback(t, p, func(ctx context.Context) error {
		if err := p.SetLimits(1, DefaultMaxWorkers); err != nil {
			return err
		}
		left := *p.left.Load()
		if _, err := p.Submit(func() error { runtime.Goexit(); return nil }, nil); err != nil {
			return err
		}
		select {
		case <-left: // the other worker exited, replaced or not
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	require.Equal(t, 1, workers, "a worker that exited was replaced above the minimum of one")
}

// Close and Shutdown from a Callback that its worker delivers: they cannot
// wait for their own goroutine, deliver the callbacks still due nested, and
// return; the pool then releases everything.
func TestCloseFromACallbackDeliveredByAWorker(t *testing.T) {
	for _, how := range []string{"close", "shutdown"} {
		t.Run(how, func(t *testing.T) {
			p, err := New()
			require.NoError(t, err)
			loopParks(t, p)
			type result struct {
				on      string
				err     error
				nested  []error
				workers int
			}
			res := make(chan result, 1)
			_, err = p.Submit(func() error { return nil }, func(error) {
				r := result{on: deliverer(p)}
				// A request whose callback comes while Close waits.
				var nested []error
				_, r.err = p.Submit(func() error { return nil }, func(err error) { nested = append(nested, err) })
				if r.err != nil {
					res <- r
					return
				}
				if how == "close" {
					r.err = p.Close()
				} else {
					r.err = p.Shutdown(context.Background())
				}
				r.nested = nested
				r.workers = p.Stats().Workers
				res <- r
			})
			require.NoError(t, err)
			r := receive(t, res, how+" from the callback")
			require.Equal(t, "worker", r.on)
			require.NoError(t, r.err)
			require.Len(t, r.nested, 1, "the callback due was delivered, nested, once")
			if how == "shutdown" {
				require.NoError(t, r.nested[0], "Shutdown runs what is queued")
			}
			require.Equal(t, 1, r.workers, "no worker is left but the one delivering, which exits after the batch")
			require.NoError(t, p.Close())
			_, err = p.Submit(func() error { return nil }, nil)
			require.ErrorIs(t, err, ErrClosed)
			require.Equal(t, uint64(2), p.Stats().Delivered)
		})
	}
}

// A Callback that its worker delivers and that calls runtime.Goexit ends
// that worker: another takes its place and delivery goes on, on workers and
// on the completion goroutine.
func TestCallbackGoexitOnAWorkerKeepsDelivering(t *testing.T) {
	p := newPool(t)
	loopParks(t, p)
	on := make(chan string, 1)
	for range 20 {
		_, err := p.Submit(func() error { return nil }, func(error) {
			on <- deliverer(p)
			runtime.Goexit()
		})
		require.NoError(t, err)
		require.Equal(t, "worker", receive(t, on, "a callback that exits"))
		letGo(t, p)
	}
	done := make(chan error, 1)
	_, err := p.Submit(func() error { return nil }, func(err error) { done <- err })
	require.NoError(t, err)
	require.NoError(t, receive(t, done, "a callback after them"))
	letGo(t, p) // the drain is counted as it ends
	s := p.Stats()
	require.Equal(t, uint64(21), s.Delivered)
	require.LessOrEqual(t, s.Workers, 1, "each worker that exited was replaced at most")
}

// A Close from a Callback that its worker delivers waits, nested, for the
// Funcs that finish after the wait began. The completion goroutine, parked
// on the same wake-up channel since before, takes the first wake-up: it must
// hand it on to the Close (a second Func still runs, so no worker leaving
// wakes it again), then wait for the worker to let go, and exit with the
// pool.
func TestCloseFromACallbackDeliveredByAWorkerWaitsForFuncs(t *testing.T) {
	p, err := New()
	require.NoError(t, err)
	loopParks(t, p)
	first, second := newGate(1), newGate(1)
	t.Cleanup(first.release)
	t.Cleanup(second.release)
	type result struct {
		on  string
		err error
	}
	res := make(chan result, 1)
	closer := make(chan uint64, 1)
	nested := make(chan error, 2)
	_, err = p.Submit(func() error { return nil }, func(error) {
		r := result{on: deliverer(p)}
		for _, g := range []*gate{first, second} {
			if _, r.err = p.Submit(g.fn(0, nil), func(err error) { nested <- err }); r.err != nil {
				res <- r
				return
			}
			<-g.started // running: Close waits for it
		}
		closer <- curGoroutineID()
		r.err = p.Close()
		res <- r
	})
	require.NoError(t, err)
	id := receive(t, closer, "the callback")
	eventually(t, func() bool { return waitsForAWakeUp(id) }, "Close waits for the Funcs")
	first.release()
	require.NoError(t, receive(t, nested, "the first Func's callback, delivered nested"))
	second.release()
	require.NoError(t, receive(t, nested, "the second Func's callback, delivered nested"))
	r := receive(t, res, "Close from the callback")
	require.Equal(t, "worker", r.on)
	require.NoError(t, r.err)
	require.NoError(t, p.Close())
	require.Equal(t, uint64(3), p.Stats().Delivered)
}

// A worker about to deliver as the loop leaves the count of workers, and a
// request queued meanwhile at max workers then gets a worker at once: the
// Callback that worker runs may wait for that very request. The test plays
// the worker's part for one that is still busy, which then comes back above
// max and exits (the test counts it again first, as it would as it came
// back).
func TestLeavingWorkersStartsOneForTheQueue(t *testing.T) {
	p := newPool(t, WithMaxWorkers(1))
	busy := newGate(1)
	t.Cleanup(busy.release)
	_, err := p.Submit(busy.fn(0, nil), nil)
	require.NoError(t, err)
	<-busy.started
	queued := newGate(1)
	t.Cleanup(queued.release)
	_, err = p.Submit(queued.fn(1, nil), nil)
	require.NoError(t, err)
	require.Equal(t, 1, p.Stats().Queued, "at max: the second request waits")

	var w *worker
	p.workerIDs.Range(func(_, v any) bool { w = v.(*worker); return false })
	require.NotNil(t, w)
	p.mu.Lock()
	p.leaveWorkers(w)
	p.mu.Unlock()
	require.Equal(t, 1, receive(t, queued.started, "the queued request starts"))
	p.mu.Lock()
	p.rejoinWorkers(w)
	p.mu.Unlock()
	require.Equal(t, 2, p.Stats().Workers)

	busy.release()
	queued.release()
	eventually(t, func() bool { s := p.Stats(); return s.Workers <= 1 && s.Running == 0 },
		"back above max, one worker exits")
}

// The same end to end: a request submitted just as a lone request's Func
// returns, at max workers, while its Callback waits for the new request's
// Func. The submission lands, at some turn of the loop, between the lone
// request's publication and its worker's delivery.
func TestCallbackOfALoneRequestWaitsForOneSubmittedMeanwhile(t *testing.T) {
	p := newPool(t, WithMaxWorkers(1))
	for i := range 2000 {
		returning, submitted, ran := make(chan struct{}), make(chan error, 1), make(chan struct{})
		res := make(chan error, 1)
		go func() {
			<-returning
			for range i % 64 { // vary where the submission lands
				runtime.Gosched()
			}
			_, err := p.Submit(func() error { close(ran); return nil }, nil)
			submitted <- err
		}()
		_, err := p.Submit(func() error { close(returning); return nil }, func(error) {
			if err := <-submitted; err != nil {
				res <- err
				return
			}
			select {
			case <-ran:
				res <- nil
			case <-time.After(30 * time.Second):
				res <- errors.New("the Func it waits for never ran")
			}
		})
		require.NoError(t, err)
		require.NoError(t, receive(t, res, "the callback"), "round %d", i)
	}
}
