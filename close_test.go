package threadpool

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestCloseCancelsQueuedWaitsRunningDeliversAll(t *testing.T) {
	p, err := New(WithMaxWorkers(1))
	require.NoError(t, err)
	g := newGate(1)
	var mu sync.Mutex
	got := map[int]error{}
	record := func(i int) Callback {
		return func(err error) { mu.Lock(); got[i] = err; mu.Unlock() }
	}
	canceledSeen := make(chan struct{}, 2)
	_, err = p.Submit(g.fn(0, errors.New("finished")), record(0))
	require.NoError(t, err)
	<-g.started
	for i := 1; i <= 2; i++ {
		_, err = p.Submit(func() error { t.Error("canceled request ran"); return nil }, func(err error) {
			record(i)(err)
			canceledSeen <- struct{}{}
		})
		require.NoError(t, err)
	}
	closed := make(chan error)
	go func() { closed <- p.Close() }()
	<-canceledSeen
	<-canceledSeen
	g.release() // Close is waiting for the running request
	require.NoError(t, <-closed)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 3)
	require.EqualError(t, got[0], "finished")
	require.ErrorIs(t, got[1], ErrCanceled)
	require.ErrorIs(t, got[2], ErrCanceled)
	s := p.Stats()
	require.Equal(t, s.Submitted, s.Completed+s.Canceled)
	require.Zero(t, s.Workers)
}

func TestShutdownRunsQueuedWork(t *testing.T) {
	p, err := New(WithMaxWorkers(2))
	require.NoError(t, err)
	const n = 100
	var ok atomic.Int32
	for i := 0; i < n; i++ {
		_, err := p.Submit(func() error { return nil }, func(err error) {
			if err == nil {
				ok.Add(1)
			}
		})
		require.NoError(t, err)
	}
	require.NoError(t, p.Shutdown(context.Background()))
	require.Equal(t, int32(n), ok.Load())
	require.NoError(t, p.Shutdown(context.Background()), "twice")
	require.NoError(t, p.Close())
}

// Shutdown whose context ends cancels the queued work and returns at once,
// while a Func is still running: that one finishes in the background, its
// callback is delivered once, and a later Close waits for it.
func TestShutdownContextEndsReturnsAtOnce(t *testing.T) {
	p, err := New(WithMaxWorkers(1))
	require.NoError(t, err)
	g := newGate(1)
	results := make(chan error, 3)
	cb := func(err error) { results <- err }
	_, err = p.Submit(g.fn(0, errors.New("ran")), cb)
	require.NoError(t, err)
	<-g.started
	for i := 0; i < 2; i++ {
		_, err = p.Submit(func() error { return nil }, cb)
		require.NoError(t, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, p.Shutdown(ctx), context.DeadlineExceeded, "bounded by ctx with a Func still running")
	require.ErrorIs(t, <-results, ErrCanceled)
	require.ErrorIs(t, <-results, ErrCanceled)
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	g.release()
	require.NoError(t, <-closed)
	require.EqualError(t, <-results, "ran", "delivered before Close returned")
	s := p.Stats()
	require.Equal(t, uint64(3), s.Delivered)
	require.Equal(t, uint64(2), s.Canceled)
	require.Zero(t, s.Workers)
}

func TestSubmitRacingClose(t *testing.T) {
	for round := 0; round < 20; round++ {
		p, err := New(WithMaxWorkers(4))
		require.NoError(t, err)
		var accepted, called atomic.Int64
		start := make(chan struct{})
		var wg sync.WaitGroup
		refused := make([]error, 8) // each submitter's last error, checked below
		for g := range refused {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for {
					_, err := p.Submit(func() error { return nil }, func(error) { called.Add(1) })
					if err != nil {
						refused[g] = err
						return
					}
					accepted.Add(1)
				}
			}()
		}
		close(start)
		for p.Stats().Submitted < 100 {
			_ = p.SubmitCo(context.Background(), func() error { return nil })
		}
		var cwg sync.WaitGroup
		closeErrs := make([]error, 3)
		for i := range closeErrs {
			cwg.Add(1)
			go func() { defer cwg.Done(); closeErrs[i] = p.Close() }()
		}
		cwg.Wait()
		calledAtClose := called.Load()
		wg.Wait() // the submitters have counted what was accepted
		require.Equal(t, make([]error, 3), closeErrs)
		for _, err := range refused {
			require.ErrorIs(t, err, ErrClosed)
		}
		require.Equal(t, accepted.Load(), calledAtClose, "every accepted Submit got one callback before Close returned")
		require.Equal(t, calledAtClose, called.Load(), "and none after")
	}
}

func TestCloseFromCallback(t *testing.T) {
	p, err := New(WithMaxWorkers(1))
	require.NoError(t, err)
	g := newGate(1)
	var got []error
	var mu sync.Mutex
	closedInside := make(chan error, 1)
	_, err = p.Submit(g.fn(0, nil), func(err error) {
		mu.Lock()
		got = append(got, err)
		mu.Unlock()
		closedInside <- p.Close() // would wait for itself: must return
	})
	require.NoError(t, err)
	<-g.started
	_, err = p.Submit(func() error { return nil }, func(err error) {
		mu.Lock()
		got = append(got, err)
		mu.Unlock()
	})
	require.NoError(t, err)
	g.release()
	require.NoError(t, <-closedInside)
	require.NoError(t, p.Close())
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 2)
	require.NoError(t, got[0])
}

func TestShutdownFromCallback(t *testing.T) {
	p, err := New(WithMaxWorkers(1))
	require.NoError(t, err)
	first, rest := newGate(1), newGate(3)
	var order []int
	shut := make(chan error, 1)
	_, err = p.Submit(first.fn(0, nil), func(error) {
		order = append(order, 0)
		rest.release()
		shut <- p.Shutdown(context.Background())
		order = append(order, 99)
	})
	require.NoError(t, err)
	<-first.started
	for i := 1; i <= 3; i++ {
		_, err = p.Submit(rest.fn(i, nil), func(error) { order = append(order, i) })
		require.NoError(t, err)
	}
	first.release()
	require.NoError(t, <-shut)
	require.NoError(t, p.Close())
	require.Equal(t, []int{0, 1, 2, 3, 99}, order, "Shutdown ran the queued work nested, then returned")
}

func TestCloseIsIdempotentAndConcurrent(t *testing.T) {
	p, err := New(WithMinWorkers(3))
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = p.Close() }()
	}
	wg.Wait()
	require.Equal(t, make([]error, 4), errs)
	require.NoError(t, p.Close())
	require.NoError(t, p.Shutdown(context.Background()))
	require.Zero(t, p.Stats().Workers)
}

// loopKinds are the three completion loops: the default one woken through a
// channel, the default one woken through an eventfd, and the caller's own.
var loopKinds = []struct {
	name     string
	external bool
	opts     []Option
}{
	{name: "chan"},
	{name: "eventfd", opts: []Option{withLoopWake(wakeEventfd)}},
	{name: "external", external: true, opts: []Option{WithExternalLoop()}},
}

// results records the callbacks of named requests. Any goroutine.
type results struct {
	mu   sync.Mutex
	errs map[string][]error
}

func newResults() *results { return &results{errs: map[string][]error{}} }

// cb returns a Callback that records request name.
func (r *results) cb(name string) Callback {
	return func(err error) {
		r.mu.Lock()
		r.errs[name] = append(r.errs[name], err)
		r.mu.Unlock()
	}
}

// once checks that request name had exactly one callback and returns its
// error.
func (r *results) once(t *testing.T, name string) error {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	require.Len(t, r.errs[name], 1, "callbacks of %s", name)
	return r.errs[name][0]
}

// waitClosing returns once Close or Shutdown has begun on p.
func waitClosing(t *testing.T, p *Pool) {
	t.Helper()
	eventually(t, func() bool { return p.closing.Load() }, "closing")
}

// Close called by a Func cancels what is queued, waits for the other running
// Func, and returns; the Func's own callback follows once it returns, and a
// Close from another goroutine returns too, in every loop mode.
func TestCloseFromFunc(t *testing.T) {
	for _, mode := range loopKinds {
		t.Run(mode.name, func(t *testing.T) {
			p, err := New(append(mode.opts, WithMaxWorkers(2))...)
			require.NoError(t, err)
			res := newResults()
			errA := errors.New("a")
			aGo, bGate := make(chan struct{}), make(chan struct{})
			started := make(chan struct{}, 2)
			var bDone, sawBDone atomic.Bool
			closedInside := make(chan error, 1)
			_, err = p.Submit(func() error {
				started <- struct{}{}
				<-aGo
				err := p.Close()
				sawBDone.Store(bDone.Load())
				closedInside <- err
				return errA
			}, res.cb("a"))
			require.NoError(t, err)
			_, err = p.Submit(func() error {
				started <- struct{}{}
				<-bGate
				bDone.Store(true)
				return nil
			}, res.cb("b"))
			require.NoError(t, err)
			<-started
			<-started
			_, err = p.Submit(func() error { t.Error("canceled request ran"); return nil }, res.cb("c"))
			require.NoError(t, err)

			close(aGo)
			waitClosing(t, p) // a's Close has begun
			outer := make(chan error, 1)
			go func() { outer <- p.Close() }()
			close(bGate)
			require.NoError(t, <-closedInside)
			require.True(t, sawBDone.Load(), "Close from a Func waits for the other running Func")
			require.NoError(t, <-outer)

			require.ErrorIs(t, res.once(t, "a"), errA)
			require.NoError(t, res.once(t, "b"))
			require.ErrorIs(t, res.once(t, "c"), ErrCanceled)
			require.Equal(t, Stats{
				Submitted: 3, Completed: 2, Canceled: 1, Delivered: 3, MaxWorkers: 2,
			}, zeroLoopStats(p.Stats()))
		})
	}
}

// zeroLoopStats clears the loop's counters of s, which depend on timing.
func zeroLoopStats(s Stats) Stats {
	s.Drains, s.MaxDrain, s.LoopWakes = 0, 0, 0
	return s
}

// A pool whose Close or Shutdown returned before its last Func (a Close from
// a Func, a Shutdown whose context ended) releases its goroutines by itself
// once that Func has returned and its callback has run.
func TestPoolReleasesItselfAfterEarlyReturn(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, mode := range loopKinds[:2] {
		for _, how := range []string{"Close from a Func", "Shutdown whose context ended"} {
			t.Run(mode.name+"/"+how, func(t *testing.T) {
				leaks := goleak.IgnoreCurrent()
				p, err := New(append(mode.opts, WithMinWorkers(2))...)
				require.NoError(t, err)
				got := make(chan error, 1)
				started, hold := make(chan struct{}), make(chan struct{})
				fn := func() error { close(started); <-hold; return nil }
				if how == "Close from a Func" {
					fn = func() error { close(started); return p.Close() }
				}
				_, err = p.Submit(fn, func(err error) { got <- err })
				require.NoError(t, err)
				<-started
				if how != "Close from a Func" {
					require.ErrorIs(t, p.Shutdown(canceled), context.Canceled)
					close(hold)
				}
				require.NoError(t, <-got)
				goleak.VerifyNone(t, leaks)
				require.NoError(t, p.Close())
				require.Zero(t, p.Stats().Workers)
			})
		}
	}
}

// A Shutdown whose context ended releases the pool by itself even when no
// worker is left, none to leave later: here the only one ended in a
// runtime.Goexit before Shutdown, while a callback was still undelivered.
func TestPoolReleasesItselfWithNoWorkerLeft(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, mode := range loopKinds[:2] {
		t.Run(mode.name, func(t *testing.T) {
			leaks := goleak.IgnoreCurrent()
			p, err := New(append(mode.opts, WithMaxWorkers(1), WithSpin(0))...)
			require.NoError(t, err)
			// The first request ends once the second is queued behind it,
			// so that it is not alone: the completion goroutine, not its
			// worker, delivers its callback.
			first := newGate(1)
			t.Cleanup(first.release)
			hold, inCallback := make(chan struct{}), make(chan struct{})
			var onLoop atomic.Bool
			_, err = p.Submit(first.fn(0, nil), func(error) {
				onLoop.Store(curGoroutineID() == p.loopGoid.Load())
				close(inCallback)
				<-hold
			})
			require.NoError(t, err)
			<-first.started
			left := *p.left.Load()
			got := make(chan error, 1)
			_, err = p.Submit(func() error { runtime.Goexit(); return nil }, func(err error) { got <- err })
			require.NoError(t, err)
			first.release()
			<-inCallback // the loop is busy
			require.True(t, onLoop.Load(), "the completion goroutine delivers the first callback")
			<-left // the only worker (max 1) ran the second and exited, not replaced (min 0)
			require.Zero(t, p.Stats().Workers)
			require.ErrorIs(t, p.Shutdown(canceled), context.Canceled)
			close(hold)
			require.ErrorIs(t, <-got, ErrGoexit)
			goleak.VerifyNone(t, leaks)
			require.NoError(t, p.Close())
		})
	}
}

// A Close from a Callback, with no worker left, still ends the completion
// goroutine when a callback it delivers nested calls runtime.Goexit, which
// unwinds that Close and restarts the loop.
func TestCloseFromCallbackWithGoexitNested(t *testing.T) {
	for _, mode := range loopKinds[:2] {
		t.Run(mode.name, func(t *testing.T) {
			leaks := goleak.IgnoreCurrent()
			p, err := New(append(mode.opts, WithMaxWorkers(1), WithSpin(0))...)
			require.NoError(t, err)
			left := *p.left.Load()
			inFirst, closeNow := make(chan struct{}), make(chan struct{})
			_, err = p.Submit(func() error { runtime.Goexit(); return nil }, func(error) {
				close(inFirst)
				<-closeNow
				_ = p.Close() // delivers the second callback nested
			})
			require.NoError(t, err)
			<-left // the worker is gone
			<-inFirst
			left = *p.left.Load()
			_, err = p.Submit(func() error { runtime.Goexit(); return nil }, func(error) { runtime.Goexit() })
			require.NoError(t, err)
			<-left // its worker is gone too; its completion is published
			require.Zero(t, p.Stats().Workers)
			close(closeNow)
			goleak.VerifyNone(t, leaks)
			require.NoError(t, p.Close())
		})
	}
}

// A Shutdown that runs the completion loop on its caller (from a Callback,
// or WithExternalLoop), with no worker left, still releases the pool's
// goroutines when a callback it delivers calls runtime.Goexit, which unwinds
// that Shutdown: no worker is left to do it as it leaves.
func TestShutdownOnLoopWithGoexitNested(t *testing.T) {
	for _, mode := range loopKinds {
		t.Run(mode.name, func(t *testing.T) {
			leaks := goleak.IgnoreCurrent()
			p, err := New(append(mode.opts, WithMaxWorkers(1), WithSpin(0))...)
			require.NoError(t, err)
			shutNow := make(chan struct{})
			if !mode.external {
				left := *p.left.Load()
				inFirst := make(chan struct{})
				_, err = p.Submit(func() error { runtime.Goexit(); return nil }, func(error) {
					close(inFirst)
					<-shutNow
					_ = p.Shutdown(context.Background()) // delivers the second callback nested
				})
				require.NoError(t, err)
				<-left // the worker is gone
				<-inFirst
			}
			left := *p.left.Load()
			_, err = p.Submit(func() error { runtime.Goexit(); return nil }, func(error) { runtime.Goexit() })
			require.NoError(t, err)
			<-left // its worker is gone too; its completion is published
			require.Zero(t, p.Stats().Workers)
			if mode.external {
				go func() {
					<-shutNow
					_ = p.Shutdown(context.Background()) // the loop, ended by the callback
				}()
			}
			close(shutNow)
			goleak.VerifyNone(t, leaks)
			require.NoError(t, p.Close())
			require.Equal(t, -1, p.Fd())
		})
	}
}

// WithExternalLoop, a Close on the loop whose delivered callback calls
// runtime.Goexit, which unwinds that Close, still releases the pool's
// goroutines with no worker left to do it; the descriptor stays for the
// loop's next Close.
func TestCloseExternalWithGoexitNested(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	p, err := New(WithExternalLoop(), WithMaxWorkers(1), WithSpin(0))
	require.NoError(t, err)
	left := *p.left.Load()
	_, err = p.Submit(func() error { runtime.Goexit(); return nil }, func(error) { runtime.Goexit() })
	require.NoError(t, err)
	<-left // the worker is gone; the completion is published
	require.Zero(t, p.Stats().Workers)
	unwound := make(chan struct{})
	go func() {
		defer close(unwound)
		_ = p.Close() // the loop, ended by the callback
	}()
	<-unwound
	goleak.VerifyNone(t, leaks)
	require.NotEqual(t, -1, p.Fd(), "the descriptor stays for the loop's next Close")
	require.NoError(t, p.Close())
	require.Equal(t, -1, p.Fd())
}

// Two Funcs that call Close at once do not wait for each other.
func TestCloseFromTwoFuncs(t *testing.T) {
	p := newPool(t, WithMaxWorkers(2))
	var both sync.WaitGroup
	both.Add(2)
	res := newResults()
	for _, name := range []string{"a", "b"} {
		_, err := p.Submit(func() error {
			both.Done()
			both.Wait()
			return p.Close()
		}, res.cb(name))
		require.NoError(t, err)
	}
	both.Wait() // both running: the Close below cancels neither
	require.NoError(t, p.Close())
	require.NoError(t, res.once(t, "a"))
	require.NoError(t, res.once(t, "b"))
}

// Shutdown from a Func runs a queued request itself while the only other
// worker is busy, here in a Func that waits for that very request.
func TestShutdownFromFuncRunsQueuedWhileOtherBusy(t *testing.T) {
	p := newPool(t, WithMaxWorkers(2), WithSpin(0))
	xRan, bStarted := make(chan struct{}), make(chan struct{})
	bErr := make(chan error, 1)
	_, err := p.Submit(func() error {
		close(bStarted)
		select {
		case <-xRan:
			return nil
		case <-time.After(30 * time.Second):
			return errors.New("the queued request never ran")
		}
	}, func(err error) { bErr <- err })
	require.NoError(t, err)
	<-bStarted
	aStarted, aGo := make(chan struct{}), make(chan struct{})
	shut := make(chan error, 1)
	_, err = p.Submit(func() error {
		close(aStarted)
		<-aGo
		shut <- p.Shutdown(context.Background())
		return nil
	}, nil)
	require.NoError(t, err)
	<-aStarted
	// Both workers busy at the maximum: the request stays queued.
	_, err = p.Submit(func() error { close(xRan); return nil }, nil)
	require.NoError(t, err)
	close(aGo)
	require.NoError(t, <-bErr)
	require.NoError(t, <-shut)
}

// Shutdown called by a Func lets queued work run and waits for the other
// Funcs, not for its own; with no other worker, the calling worker runs the
// queued work itself.
func TestShutdownFromFunc(t *testing.T) {
	for _, max := range []int{1, 2} {
		t.Run(fmt.Sprint("max", max), func(t *testing.T) {
			p := newPool(t, WithMaxWorkers(max))
			res := newResults()
			var cRan, sawCRan atomic.Bool
			shut := make(chan error, 1)
			_, err := p.Submit(func() error {
				_, err := p.Submit(func() error { cRan.Store(true); return nil }, res.cb("c"))
				if err != nil {
					return err
				}
				err = p.Shutdown(context.Background())
				sawCRan.Store(cRan.Load())
				shut <- err
				return nil
			}, res.cb("a"))
			require.NoError(t, err)
			require.NoError(t, <-shut)
			require.True(t, sawCRan.Load(), "Shutdown from a Func runs the queued work first")
			require.NoError(t, p.Close())
			require.NoError(t, res.once(t, "a"))
			require.NoError(t, res.once(t, "c"))
			require.Zero(t, p.Stats().Running)
		})
	}
}

// Shutdown called by a Func whose context has ended returns the context's
// error, with the queued work canceled, not run, while another Func still
// runs. (With its context alive it would run the queued request itself: no
// other worker is free.)
func TestShutdownFromFuncContextEnds(t *testing.T) {
	p := newPool(t, WithMaxWorkers(2))
	res := newResults()
	bStarted, bGate := make(chan struct{}), make(chan struct{})
	_, err := p.Submit(func() error { close(bStarted); <-bGate; return nil }, res.cb("b"))
	require.NoError(t, err)
	<-bStarted
	ctx, cancel := context.WithCancel(context.Background())
	shut, queued, shutNow := make(chan error, 1), make(chan struct{}), make(chan struct{})
	_, err = p.Submit(func() error {
		_, err := p.Submit(func() error { t.Error("canceled request ran"); return nil }, res.cb("c"))
		close(queued)
		if err != nil {
			return err
		}
		<-shutNow
		shut <- p.Shutdown(ctx)
		return nil
	}, res.cb("a"))
	require.NoError(t, err)
	<-queued
	cancel()
	close(shutNow)
	require.ErrorIs(t, <-shut, context.Canceled)
	close(bGate)
	require.NoError(t, p.Close())
	require.NoError(t, res.once(t, "a"))
	require.NoError(t, res.once(t, "b"))
	require.ErrorIs(t, res.once(t, "c"), ErrCanceled)
}

// A Callback that calls Close finds every Flush the batch deferred already
// run when Close returns, its own and those of the callbacks Close delivered
// nested, so that it may Close and then wait for its replies to be sent.
func TestCloseFromCallbackFlushesDeferred(t *testing.T) {
	for _, mode := range loopKinds {
		t.Run(mode.name, func(t *testing.T) {
			p, err := New(append(mode.opts, WithMaxWorkers(2))...)
			require.NoError(t, err)
			g := newGate(1)
			conn, own := &countFlusher{}, &countFlusher{}
			_, err = p.Submit(g.fn(0, nil), func(error) { p.DeferCall(conn) })
			require.NoError(t, err)
			<-g.started
			type flushed struct {
				closeErr  error
				conn, own int
			}
			atClose := make(chan flushed, 1)
			_, err = p.Submit(func() error { return nil }, func(error) {
				p.DeferCall(own)
				g.release()
				err := p.Close() // delivers the first request nested
				atClose <- flushed{err, conn.n, own.n}
			})
			require.NoError(t, err)
			if mode.external {
				waitReadable(t, p.Fd())
				require.Equal(t, 1, p.RunCompletions(), "the other one was delivered nested, by Close")
			}
			require.Equal(t, flushed{nil, 1, 1}, <-atClose, "flushed before Close returned")
			require.NoError(t, p.Close())
			require.Equal(t, 1, conn.n)
			require.Equal(t, 1, own.n)
			require.Equal(t, uint64(2), p.Stats().Delivered)
		})
	}
}

// A Flush that a Close from a Callback runs before it waits may end the
// wait of the last running Func and call Close itself, which delivers the
// rest and, WithExternalLoop, closes the descriptor: the outer Close then
// has nothing left to wait for. It waited on the closed descriptor, and
// counted a failed wait (Stats.WaitErrors, which says the descriptor is
// broken) and paused before it returned.
func TestFlushThatClosesInANestedCloseIsNoWaitError(t *testing.T) {
	p, err := New(WithExternalLoop(), WithMaxWorkers(2))
	require.NoError(t, err)
	reply, _ := funcWaitingForAFlush(t, p)
	inner := make(chan error, 1)
	closing := funcFlusher(func() {
		reply.Flush()
		inner <- p.Close()
	})
	outer := make(chan error, 1)
	_, err = p.Submit(func() error { return nil }, func(error) {
		p.DeferCall(closing)
		outer <- p.Close()
	})
	require.NoError(t, err)
	waitReadable(t, p.Fd())
	p.RunCompletions()
	require.NoError(t, <-inner)
	require.NoError(t, <-outer)
	require.Zero(t, p.Stats().WaitErrors)
	require.NoError(t, p.Close())
}

// A Close on the loop, from a Callback or from a Flush, runs the Flushes
// its batch deferred (before the Callback's Close, or after the calling
// Flush) before it waits for the running Funcs, with every kind of loop: a
// Func may wait for a reply that a Flush sends, as for a callback. Close
// waited for that Func for ever: from a Callback it ran the batch's Flushes
// once the Funcs had returned, and from a Flush those deferred after it
// waited for it to return.
func TestCloseOnTheLoopRunsTheFlushesAFuncWaitsFor(t *testing.T) {
	for _, from := range []string{"callback", "flush"} {
		for _, mode := range loopKinds {
			t.Run(from+"/"+mode.name, func(t *testing.T) {
				p, err := New(append(mode.opts, WithMaxWorkers(2))...)
				require.NoError(t, err)
				reply, waited := funcWaitingForAFlush(t, p)
				closed := make(chan error, 1)
				closing := funcFlusher(func() { closed <- p.Close() })
				_, err = p.Submit(func() error { return nil }, func(error) {
					if from == "callback" {
						p.DeferCall(reply)
						closed <- p.Close()
						return
					}
					p.DeferCall(closing)
					p.DeferCall(reply) // after closing: when it returns, or in its Close
				})
				require.NoError(t, err)
				awaitClose(t, p, mode.external, closed,
					"Close from a "+from+" still waits, after 30s, for a Func that waits for a Flush")
				require.NoError(t, <-waited, "delivered by Close")
				require.NoError(t, p.Close())
			})
		}
	}
}

// funcWaitingForAFlush submits a Func that waits until reply is flushed (a
// reply that another request's callback sends, say), and returns once it
// runs, with the channel its callback sends its error on. Should the test
// end first, reply is flushed then.
func funcWaitingForAFlush(t *testing.T, p *Pool) (reply *closeFlusher, waited <-chan error) {
	t.Helper()
	reply = &closeFlusher{ch: make(chan struct{})}
	t.Cleanup(reply.Flush) // should a Close hang: end the Func, and so the Close
	started, done := make(chan struct{}), make(chan error, 1)
	_, err := p.Submit(func() error {
		close(started)
		<-reply.ch
		return nil
	}, func(err error) { done <- err })
	require.NoError(t, err)
	<-started
	return reply, done
}

// awaitClose waits up to 30s for the result, on closed, of a Close that a
// Callback or a Flush of p calls, and requires it to be nil; what says what
// it means if none comes. With an external loop it first runs that loop on
// a goroutine of its own, where the Close blocks, and returns once the loop
// has returned, as only one goroutine may deliver at a time.
func awaitClose(t *testing.T, p *Pool, external bool, closed chan error, what string) {
	t.Helper()
	loopDone := make(chan struct{})
	if external {
		go func() {
			defer close(loopDone)
			if err := awaitReadable(p.Fd()); err != nil {
				closed <- err
				return
			}
			p.RunCompletions()
		}()
	} else {
		close(loopDone)
	}
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal(what)
	}
	<-loopDone
}

// closeFlusher closes ch at its first Flush. Any goroutine.
type closeFlusher struct {
	once sync.Once
	ch   chan struct{}
}

func (f *closeFlusher) Flush() { f.once.Do(func() { close(f.ch) }) }

// takeWakeups takes whatever wake-up of the pool's own loop is pending, as
// the loop's wait does. Loop goroutine only.
func (p *Pool) takeWakeups() {
	if p.notifier != nil {
		p.notifier.Clear()
		return
	}
	select {
	case <-p.wakeCh:
	default:
	}
}

// A loop restarted after a Callback called runtime.Goexit must drain and
// check for Close's stop before it waits: the wake-up that announced the stop
// may have been taken by the loop it replaces, which then ran the Callback.
// The Callback stages that: it waits for the stop, takes the wake-ups, and
// leaves by runtime.Goexit. Its request ends only once Close has begun, so
// that the completion goroutine delivers it: a lone request's worker,
// delivering it itself, would wait for a stop that comes only after Close
// has waited for that worker.
func TestRestartedLoopFindsStop(t *testing.T) {
	for _, mode := range loopKinds[:2] {
		t.Run(mode.name, func(t *testing.T) {
			p, err := New(mode.opts...)
			require.NoError(t, err)
			release := make(chan struct{})
			var onLoop atomic.Bool
			_, err = p.Submit(func() error { <-release; return nil }, func(error) {
				onLoop.Store(curGoroutineID() == p.loopGoid.Load())
				for !p.stopLoop.Load() {
					runtime.Gosched() // Close waits for this loop
				}
				p.takeWakeups()
				runtime.Goexit()
			})
			require.NoError(t, err)
			closed := make(chan error, 1)
			go func() { closed <- p.Close() }()
			waitClosing(t, p)
			close(release)
			awaitClose(t, p, false, closed, "Close waits, after 30s, for a loop that never found the stop")
			require.True(t, onLoop.Load(), "the completion goroutine delivered the callback")
			require.Equal(t, uint64(1), p.Stats().Delivered)
		})
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

// WithExternalLoop, a Close from a Func leaves the descriptor and the
// callbacks still due to the loop: Fd stays valid and RunCompletions
// delivers them, the Func's own included, until the loop's own Close.
func TestExternalLoopCloseFromFuncLeavesFdToLoop(t *testing.T) {
	p, err := New(WithExternalLoop(), WithMaxWorkers(2))
	require.NoError(t, err)
	res := newResults()
	closed := make(chan error, 1)
	_, err = p.Submit(func() error { closed <- p.Close(); return nil }, res.cb("a"))
	require.NoError(t, err)
	require.NoError(t, <-closed)
	fd := p.Fd()
	require.NotEqual(t, -1, fd, "after a Close from a Func")
	waitReadable(t, fd)
	require.Equal(t, 1, p.RunCompletions(), "after a Close from a Func")
	require.NoError(t, res.once(t, "a"))
	require.NoError(t, p.Close())
	require.Equal(t, -1, p.Fd())
	require.Zero(t, p.RunCompletions())
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

// Shutdown with nothing left to deliver returns nil and releases the pool,
// whether or not its ctx has ended, in every loop mode: from a Callback
// whose request was the last one, or WithExternalLoop from the loop.
func TestShutdownWhenQuietIgnoresEndedContext(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, mode := range loopKinds {
		t.Run(mode.name, func(t *testing.T) {
			p, err := New(mode.opts...)
			require.NoError(t, err)
			shut := make(chan error, 1)
			_, err = p.Submit(func() error { return nil }, func(error) {
				if !mode.external {
					shut <- p.Shutdown(canceled)
				}
			})
			require.NoError(t, err)
			if mode.external {
				for p.Stats().Delivered < 1 {
					waitReadable(t, p.Fd())
					p.RunCompletions()
				}
				shut <- p.Shutdown(canceled)
				require.Equal(t, -1, p.Fd(), "released")
			}
			require.NoError(t, <-shut)
			require.NoError(t, p.Close())
		})
	}
}

// Shutdown that runs the completion loop on its caller (WithExternalLoop, or
// from a Callback) is bounded by ctx even while completions keep coming, so
// that each drain finds more to deliver: once ctx ends, what is still queued
// is canceled and Shutdown returns ctx's error, instead of running the whole
// queue. Here every callback lets the next Func finish and waits for its
// completion, as callbacks slower than the workers would; the first one ends
// ctx and lets the cancellation happen.
func TestShutdownOnLoopContextEndsWhileCompletionsKeepComing(t *testing.T) {
	for _, mode := range loopKinds {
		t.Run(mode.name, func(t *testing.T) {
			p, err := New(append(mode.opts, WithMaxWorkers(1), WithSpin(0))...)
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			const n = 6
			res := newResults()
			var ran [n]atomic.Bool
			gates := make([]chan struct{}, n)
			for i := range gates {
				gates[i] = make(chan struct{})
			}
			close(gates[0])
			shut := make(chan error, 1)
			submitted := make(chan struct{})
			if !mode.external {
				// Shutdown from a Callback, once every request is queued.
				_, err = p.Submit(func() error { <-submitted; return nil }, func(error) {
					shut <- p.Shutdown(ctx)
				})
				require.NoError(t, err)
			}
			for i := range n {
				name := fmt.Sprint(i)
				_, err = p.Submit(func() error {
					<-gates[i]
					ran[i].Store(true)
					return nil
				}, func(err error) {
					res.cb(name)(err)
					if i == 0 {
						cancel()
						// ctx's end cancels the queue from another
						// goroutine; give it a while (without a fix,
						// nothing is ever canceled).
						deadline := time.Now().Add(30 * time.Second)
						for p.canceled.Load() == 0 && time.Now().Before(deadline) {
							runtime.Gosched()
						}
					}
					if i+1 < n {
						select {
						case <-gates[i+1]:
						default:
							close(gates[i+1]) // the next Func may finish
						}
					}
					// Wait for the next completion, unless the batch
					// holds more or nothing is left to come.
					for p.done.Load() == nil && p.batch == nil && p.pending.Load() > 0 {
						runtime.Gosched()
					}
				})
				require.NoError(t, err)
			}
			close(submitted)
			if mode.external {
				shut <- p.Shutdown(ctx)
			}
			require.ErrorIs(t, <-shut, context.Canceled, "ctx ended in the first callback")
			require.NoError(t, p.Close())
			require.NoError(t, res.once(t, "0"))
			last := fmt.Sprint(n - 1)
			require.ErrorIs(t, res.once(t, last), ErrCanceled, "still queued when ctx ended")
			require.False(t, ran[n-1].Load())
			for i := range n {
				res.once(t, fmt.Sprint(i)) // exactly one callback each
			}
		})
	}
}

// submitWaitingFunc submits B, whose Func waits until aDone is closed (by
// another request's callback) and gives up after a bound, reporting it to
// B's callback; it returns once B runs, with the channel of B's result.
func submitWaitingFunc(t *testing.T, p *Pool, aDone <-chan struct{}) <-chan error {
	giveUp := make(chan struct{})
	timer := time.AfterFunc(30*time.Second, func() { close(giveUp) })
	t.Cleanup(func() {
		if timer.Stop() {
			close(giveUp) // B must not outlive a test that failed before A's callback
		}
	})
	bStarted, bErr := make(chan struct{}), make(chan error, 1)
	_, err := p.Submit(func() error {
		close(bStarted)
		select {
		case <-aDone:
			return nil
		case <-giveUp:
			return errors.New("B gave up: A's callback was not delivered while Close waited for B")
		}
	}, func(err error) { bErr <- err })
	require.NoError(t, err)
	<-bStarted
	return bErr
}

// closeWithAFuncWaitingForACallback runs a Func, B, that waits for the
// callback of another request, A, whose Func returns only once a third
// request's callback has begun: on the loop, where that callback calls
// Close. So A's callback can only be delivered by Close itself, while it
// waits for B. drive runs the loop WithExternalLoop until Close has
// returned, and returns its error.
func closeWithAFuncWaitingForACallback(t *testing.T, p *Pool, drive func(closed <-chan error) error) {
	inC, aDone := make(chan struct{}), make(chan struct{})
	bErr := submitWaitingFunc(t, p, aDone)
	// A before C: C's callback may run, and close the pool, before a
	// Submit that followed C's returns.
	_, err := p.Submit(func() error { <-inC; return nil }, func(error) { close(aDone) })
	require.NoError(t, err)
	closed := make(chan error, 1)
	_, err = p.Submit(func() error { return nil }, func(error) {
		close(inC)
		closed <- p.Close()
	})
	require.NoError(t, err)
	require.NoError(t, drive(closed))
	require.NoError(t, <-bErr)
}

// Close from a Callback delivers the callbacks due while it waits for the
// running Funcs, so that a Func waiting for one of them ends, with every
// kind of loop.
func TestCloseFromCallbackDeliversWhileFuncsRun(t *testing.T) {
	for _, mode := range loopKinds {
		t.Run(mode.name, func(t *testing.T) {
			p, err := New(append(mode.opts, WithMaxWorkers(3))...)
			require.NoError(t, err)
			closeWithAFuncWaitingForACallback(t, p, func(closed <-chan error) error {
				for mode.external {
					waitReadable(t, p.Fd())
					p.RunCompletions()
					select {
					case err := <-closed:
						return err
					default:
					}
				}
				return <-closed
			})
			require.NoError(t, p.Close())
		})
	}
}

// WithExternalLoop, a Close from the loop goroutine, outside any Callback,
// delivers the callbacks due while it waits for the running Funcs, as the
// pool's own loop goes on delivering during a Close from elsewhere.
func TestCloseExternalDeliversWhileFuncsRun(t *testing.T) {
	p, err := New(WithExternalLoop(), WithMaxWorkers(2))
	require.NoError(t, err)
	aDone := make(chan struct{})
	bErr := submitWaitingFunc(t, p, aDone)
	_, err = p.Submit(func() error { return nil }, func(error) { close(aDone) })
	require.NoError(t, err)
	require.NoError(t, p.Close())
	require.NoError(t, <-bErr)
	require.Equal(t, -1, p.Fd())
}

// A Close from a Callback delivers the callbacks due nested while it waits
// for the running Funcs. Should one of them call runtime.Goexit, which
// unwinds that Close and restarts the loop, while another Func still runs,
// the restarted loop must go on delivering: that Func's callback is still
// due, and a later Close must find it delivered.
func TestCloseFromCallbackGoexitNestedWhileFuncRuns(t *testing.T) {
	p, err := New(WithMaxWorkers(3), WithSpin(0))
	require.NoError(t, err)
	res := newResults()
	hold, started := make(chan struct{}), make(chan struct{})
	_, err = p.Submit(func() error { close(started); <-hold; return nil }, res.cb("running"))
	require.NoError(t, err)
	<-started
	goexitGo, exiting := make(chan struct{}), make(chan struct{})
	_, err = p.Submit(func() error { <-goexitGo; return nil }, func(err error) {
		res.cb("goexit")(err)
		close(exiting)
		runtime.Goexit()
	})
	require.NoError(t, err)
	_, err = p.Submit(func() error { return nil }, func(err error) {
		res.cb("closer")(err)
		close(goexitGo)
		_ = p.Close() // delivers the goexit callback nested, which unwinds it
	})
	require.NoError(t, err)
	<-exiting
	// Let the restarted loop settle: it takes a wake-up from its wait, or
	// exits. Two sends into the one-slot channel: the second one completes
	// once the loop has received.
	select {
	case p.wakeCh <- struct{}{}:
	default:
	}
	select {
	case p.wakeCh <- struct{}{}:
	case <-p.loopDone:
	}
	close(hold)
	require.NoError(t, p.Close())
	require.NoError(t, res.once(t, "closer"))
	require.NoError(t, res.once(t, "goexit"))
	require.NoError(t, res.once(t, "running"), "the running Func's callback was lost")
	require.Equal(t, uint64(3), p.Stats().Delivered)
}

// TestLoopStopDeliversWhatCameDuringItsLastDrain: a completion published
// while the pool's own loop ends a drain (here, while a Flush that a
// Callback deferred runs), and found by the loop only once Close has told
// it to stop, is still delivered before Close returns.
func TestLoopStopDeliversWhatCameDuringItsLastDrain(t *testing.T) {
	p := newPool(t)
	late := newGate(1)
	t.Cleanup(late.release)
	lateDone := make(chan error, 1)
	_, err := p.Submit(late.fn(0, errors.New("late")), func(err error) { lateDone <- err })
	require.NoError(t, err)
	<-late.started

	inFlush, endFlush := make(chan struct{}), make(chan struct{})
	flush := funcFlusher(func() {
		close(inFlush)
		<-endFlush
	})
	_, err = p.Submit(func() error { return nil }, func(error) { p.DeferCall(flush) })
	require.NoError(t, err)
	<-inFlush // the loop is in the Flush, at the end of the drain

	late.release()
	eventually(t, func() bool { return p.done.Load() != nil }, "the late request is published")
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	eventually(t, func() bool { return p.stopLoop.Load() }, "Close tells the loop to stop")
	close(endFlush)
	require.NoError(t, <-closed)
	requireRan(t, lateDone, "late", "Close returned before the late request's callback ran")
	require.Equal(t, uint64(2), p.Stats().Delivered)
}

// TestShutdownOnLoopReturnsWhenTheLastSubmitCoEnds: a Shutdown that runs the
// completion loop (WithExternalLoop) returns once every accepted request is
// over, a SubmitCo request included, whose result goes to its caller and
// never through the loop: its end alone must wake the waiting Shutdown.
func TestShutdownOnLoopReturnsWhenTheLastSubmitCoEnds(t *testing.T) {
	p := newPool(t, WithExternalLoop())
	g := newGate(1)
	t.Cleanup(g.release)
	co := make(chan error, 1)
	go func() { co <- p.SubmitCo(context.Background(), g.fn(0, nil)) }()
	<-g.started
	go func() {
		// Let the request end once Shutdown has begun (and waits, unless
		// it is slower than a tick).
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for !p.closing.Load() {
			<-tick.C
		}
		g.release()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, p.Shutdown(ctx), "the end of the SubmitCo request did not wake Shutdown")
	require.NoError(t, <-co)
	require.Equal(t, -1, p.Fd())
}
