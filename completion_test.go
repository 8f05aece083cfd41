package threadpool_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/batchio/threadpool"
)

// When every write to the default loop's eventfd fails, the loop must still
// be woken for each completion, and Close must still end the loop.
func TestWakeWriteFailsEventfdLoop(t *testing.T) {
	noLeaks(t)
	const n = 200
	p := newPool(t, threadpool.WithEventfdLoop(), threadpool.WithMaxWorkers(4))
	nt := threadpool.LoopNotifier(p)
	require.NotNil(t, nt)
	injectWriteFault(nt)
	ta := newTally(n)
	for i := range n {
		_, err := p.Submit(func() error { return nil }, ta.cb(i))
		require.NoError(t, err)
		if i%10 == 0 {
			ta.wait(1) // some alone, while the loop sleeps in Wait
		}
	}
	ta.wait(n - n/10)
	require.NoError(t, p.Close())
	for i := range n {
		require.NoError(t, ta.requireOnce(t, i))
	}
	s := nt.Stats()
	require.NotZero(t, s.WriteErrors)
	require.Zero(t, s.Writes)
	require.ErrorIs(t, nt.LastWriteError(), unix.EBADF)
	require.Equal(t, counts{Submitted: n, Completed: n, Delivered: n}, countsOf(p.Stats()))
}

// With an external loop a failed write cannot show on Fd: MissedWakeup must
// say so until RunCompletions runs, the next good write must announce
// everything, and Shutdown must not wait for a wake-up that was lost.
func TestWakeWriteFailsExternalLoop(t *testing.T) {
	noLeaks(t)
	p := newPool(t, threadpool.WithExternalLoop(), threadpool.WithMaxWorkers(1))
	failing := injectWriteFault(threadpool.LoopNotifier(p))
	ta := newTally(4)
	require.False(t, p.MissedWakeup())

	_, err := p.Submit(func() error { return nil }, ta.cb(0))
	require.NoError(t, err)
	published(t, p)
	require.False(t, readable(t, p.Fd()))
	require.True(t, p.MissedWakeup())
	require.Equal(t, 1, p.RunCompletions())
	require.False(t, p.MissedWakeup())
	require.False(t, readable(t, p.Fd()))

	// A lost wake-up, then a good one: Fd announces both completions.
	_, err = p.Submit(func() error { return nil }, ta.cb(1))
	require.NoError(t, err)
	published(t, p)
	failing.Store(false)
	_, err = p.Submit(func() error { return nil }, ta.cb(2))
	require.NoError(t, err)
	waitReadable(t, p.Fd())
	runUntilDelivered(t, p, 3)
	require.False(t, p.MissedWakeup())

	// Shutdown waits on the descriptor: a failed write must still end it.
	failing.Store(true)
	hold := newGate()
	t.Cleanup(hold.open)
	_, err = p.Submit(func() error { hold.wait(); return nil }, ta.cb(3))
	require.NoError(t, err)
	go func() {
		// Open the gate only once Shutdown has begun, so that the failed
		// write comes while it waits on the descriptor.
		for !errors.Is(p.SetLimits(0, 1), threadpool.ErrClosed) {
			runtime.Gosched()
		}
		hold.open()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, p.Shutdown(ctx), "Shutdown waited for a wake-up whose write failed")
	for i := range 4 {
		require.NoError(t, ta.requireOnce(t, i))
	}
	require.Equal(t, counts{Submitted: 6, Completed: 6, Delivered: 4}, countsOf(p.Stats()))
}

// A Close or Shutdown of a pool WithExternalLoop that has delivered every
// callback and released Fd leaves nothing waiting: MissedWakeup is false then,
// even when a wake-up write failed and no RunCompletions took it, and stays
// false after RunCompletions.
func TestMissedWakeupFalseOnceClosed(t *testing.T) {
	noLeaks(t)
	for _, shutdown := range []bool{true, false} {
		p, err := threadpool.New(threadpool.WithExternalLoop(), threadpool.WithMaxWorkers(1))
		require.NoError(t, err)
		injectWriteFault(threadpool.LoopNotifier(p))
		ta := newTally(1)
		_, err = p.Submit(func() error { return nil }, ta.cb(0))
		require.NoError(t, err)
		published(t, p)
		require.True(t, p.MissedWakeup())
		if shutdown {
			require.NoError(t, p.Shutdown(context.Background()))
		} else {
			require.NoError(t, p.Close())
		}
		require.NoError(t, ta.requireOnce(t, 0))
		require.Equal(t, -1, p.Fd())
		require.False(t, p.MissedWakeup(), "shutdown %v: nothing is left to deliver", shutdown)
		require.Zero(t, p.RunCompletions())
		require.False(t, p.MissedWakeup(), "shutdown %v", shutdown)
	}
}

// When the default loop cannot read its eventfd, it must not end: it delivers
// what is done, counts the failed waits, polls until reads work again, and
// Close still delivers every callback.
func TestWaitReadFailsEventfdLoop(t *testing.T) {
	noLeaks(t)
	const n = 40
	p := newPool(t, threadpool.WithEventfdLoop(), threadpool.WithMaxWorkers(2))
	failing := injectReadFault(threadpool.LoopNotifier(p))
	ta := newTally(n)
	for i := range n / 2 {
		_, err := p.Submit(func() error { return nil }, ta.cb(i))
		require.NoError(t, err)
		if i%5 == 0 {
			ta.wait(1) // some alone, while the loop polls
		}
	}
	ta.wait(n/2 - n/10)
	// The first completion makes the eventfd readable for good, as no read
	// takes it back: the loop's next wait fails at once.
	require.Eventually(t, func() bool { return p.Stats().WaitErrors > 0 }, 30*time.Second, time.Millisecond)

	failing.Store(false)
	for i := n / 2; i < n; i++ {
		_, err := p.Submit(func() error { return nil }, ta.cb(i))
		require.NoError(t, err)
	}
	ta.wait(n / 2)
	failing.Store(true) // Close must not depend on the descriptor either
	require.NoError(t, p.Close())
	for i := range n {
		require.NoError(t, ta.requireOnce(t, i))
	}
	require.Equal(t, counts{Submitted: n, Completed: n, Delivered: n}, countsOf(p.Stats()))
}

// Shutdown with an external loop waits on the eventfd too: a failed read must
// not end it early nor strand a completion.
func TestWaitReadFailsExternalShutdown(t *testing.T) {
	noLeaks(t)
	p := newPool(t, threadpool.WithExternalLoop(), threadpool.WithMaxWorkers(1))
	injectReadFault(threadpool.LoopNotifier(p))
	ta := newTally(1)
	hold := newGate()
	t.Cleanup(hold.open)
	_, err := p.Submit(func() error { hold.wait(); return nil }, ta.cb(0))
	require.NoError(t, err)
	sawWaitError := make(chan bool, 1)
	go func() {
		sawWaitError <- waitForWaitError(p) // Shutdown waits for the Func and polls
		hold.open()
	}()
	require.NoError(t, p.Shutdown(context.Background()))
	require.True(t, <-sawWaitError, "Shutdown's wait on the eventfd failed while the Func ran")
	require.NoError(t, ta.requireOnce(t, 0))
}

// waitForWaitError returns true once a wait of p's loop has failed, or
// false if none has within 30 s (a wait that only catches a hang; any
// goroutine, so it reports instead of failing the test).
func waitForWaitError(p *threadpool.Pool) bool {
	deadline := time.Now().Add(30 * time.Second)
	for p.Stats().WaitErrors == 0 {
		if time.Now().After(deadline) {
			return false
		}
		runtime.Gosched()
	}
	return true
}

// A Callback that panics, without a panic handler, reaches the caller of
// RunCompletions as a *PanicError; the rest of its batch must still be
// delivered, without waiting for another completion to wake the loop, and
// counted in Stats.
func TestCallbackPanicExternalLoopKeepsBatch(t *testing.T) {
	noLeaks(t)
	p, ta := newOneWorkerExternal(t)
	hold := batchOfThree(t, p, ta, func(error) { panic("callback boom") })

	waitReadable(t, p.Fd())
	var pe *threadpool.PanicError
	func() {
		defer func() {
			v := recover()
			require.NotNil(t, v)
			var ok bool
			pe, ok = v.(*threadpool.PanicError)
			require.True(t, ok, "recovered %T", v)
		}()
		p.RunCompletions()
	}()
	require.Equal(t, "callback boom", pe.Value)
	require.NotEmpty(t, pe.Stack)

	requireRestOfBatch(t, p, ta, hold)
}

// With a panic handler, the default loop recovers a panicking Callback, hands
// the value over and goes on delivering.
func TestCallbackPanicWithHandler(t *testing.T) {
	noLeaks(t)
	const n = 100
	var mu sync.Mutex
	var got []any
	p := newPool(t, threadpool.WithPanicHandler(func(v any) {
		mu.Lock()
		got = append(got, v)
		mu.Unlock()
	}))
	ta := newTally(n)
	for i := range n {
		cb := ta.cb(i)
		if i%3 == 0 {
			cb = func(err error) { ta.cb(i)(err); panic(i) }
		}
		_, err := p.Submit(func() error { return nil }, cb)
		require.NoError(t, err)
	}
	ta.wait(n)
	require.NoError(t, p.Close())
	for i := range n {
		require.NoError(t, ta.requireOnce(t, i))
	}
	require.Len(t, got, (n+2)/3)
	require.ElementsMatch(t, func() []any {
		var want []any
		for i := 0; i < n; i += 3 {
			want = append(want, i)
		}
		return want
	}(), got)
	require.Equal(t, uint64(n), p.Stats().Delivered)
}

// A Callback that panics out of RunCompletions was delivered: Stats must count
// it, and the callbacks its batch delivered before it.
func TestStatsCountPanickingCallback(t *testing.T) {
	noLeaks(t)
	p, ta := newOneWorkerExternal(t)
	_, err := p.Submit(func() error { return nil }, ta.cb(0))
	require.NoError(t, err)
	batchOfThree(t, p, ta, func(error) { panic("boom") })
	waitReadable(t, p.Fd())
	require.Panics(t, func() { p.RunCompletions() })
	s := p.Stats()
	require.Equal(t, uint64(2), s.Delivered, "request 0 and the panicking callback")
	require.Equal(t, uint64(1), s.Drains)
	require.Equal(t, uint64(2), s.MaxDrain)
	require.NoError(t, ta.requireOnce(t, 0))
}

// A Callback that calls runtime.Goexit ends the goroutine that runs
// RunCompletions; another goroutine can take the loop over and must find the
// rest of the batch announced on Fd.
func TestCallbackGoexitExternalLoop(t *testing.T) {
	noLeaks(t)
	p, ta := newOneWorkerExternal(t)
	hold := batchOfThree(t, p, ta, func(error) { runtime.Goexit() })

	waitReadable(t, p.Fd())
	var wg sync.WaitGroup
	wg.Go(func() { p.RunCompletions() })
	wg.Wait()

	requireRestOfBatch(t, p, ta, hold)
}

// A Callback that calls runtime.Goexit on the default loop ends that loop
// goroutine; the loop restarts itself and must still deliver the rest of the
// batch, and Close must not hang. The two requests finish together so that
// the loop often takes both in one wake-up; several rounds make that likely.
func TestCallbackGoexitDefaultLoop(t *testing.T) {
	noLeaks(t)
	for _, mode := range loopModes {
		if mode.external {
			continue
		}
		t.Run(mode.name, func(t *testing.T) {
			for round := range 200 {
				p, err := threadpool.New(append(mode.opts, threadpool.WithMinWorkers(2))...)
				require.NoError(t, err)
				ta := newTally(2)
				g := newGate()
				var started sync.WaitGroup
				started.Add(2)
				fn := func() error { started.Done(); g.wait(); return nil }
				_, err = p.Submit(fn, func(err error) {
					ta.cb(0)(err)
					runtime.Goexit()
				})
				require.NoError(t, err)
				_, err = p.Submit(fn, ta.cb(1))
				require.NoError(t, err)
				started.Wait() // both running: Close cannot cancel them
				g.open()
				if round%2 == 0 {
					ta.wait(2) // delivery without Close
				}
				require.NoError(t, p.Close())
				require.NoError(t, ta.requireOnce(t, 0))
				require.NoError(t, ta.requireOnce(t, 1))
				require.Equal(t, uint64(2), p.Stats().Delivered)
			}
		})
	}
}

// A Func that calls runtime.Goexit completes with *PanicError{ErrGoexit} and
// its worker is replaced, even when it was the only one.
func TestFuncGoexitReplacesWorker(t *testing.T) {
	noLeaks(t)
	for _, mode := range loopModes {
		t.Run(mode.name, func(t *testing.T) {
			p := newPool(t, append(mode.opts, threadpool.WithMaxWorkers(1))...)
			ta := newTally(4)
			for i := range 4 {
				fn := func() error { return nil }
				if i%2 == 0 {
					fn = func() error { runtime.Goexit(); return nil }
				}
				_, err := p.Submit(fn, ta.cb(i))
				require.NoError(t, err)
			}
			if mode.external {
				runUntilDelivered(t, p, 4)
			} else {
				ta.wait(4)
			}
			for i := range 4 {
				err := ta.requireOnce(t, i)
				if i%2 == 1 {
					require.NoError(t, err)
					continue
				}
				var pe *threadpool.PanicError
				require.ErrorAs(t, err, &pe)
				require.ErrorIs(t, err, threadpool.ErrGoexit)
			}
			err := p.SubmitCo(t.Context(), func() error { runtime.Goexit(); return nil })
			require.ErrorIs(t, err, threadpool.ErrGoexit)
			require.NoError(t, p.Close())
			s := p.Stats()
			require.Equal(t, uint64(3), s.Panicked)
			require.Equal(t, uint64(5), s.Completed)
			require.Equal(t, 0, s.Workers)
		})
	}
}

// Stats taken while requests pass never shows a request further along than
// an earlier stage allows: delivered at most what completed or was canceled,
// those at most what was submitted, and panicked at most what completed.
func TestStatsSnapshotIsConsistent(t *testing.T) {
	p := newPool(t, threadpool.WithMaxWorkers(2))
	const submitters, each = 2, 20000
	var wg sync.WaitGroup
	for range submitters {
		wg.Go(func() {
			for i := range each {
				fn := func() error { return nil }
				if i%7 == 0 {
					fn = func() error { panic("boom") }
				}
				h, err := p.Submit(fn, func(error) {})
				require.NoError(t, err)
				if i%5 == 0 {
					p.Cancel(h)
				}
			}
		})
	}
	stop := make(chan struct{})
	checked := make(chan int)
	go func() {
		n := 0
		defer func() { checked <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			s := p.Stats()
			n++
			if s.Delivered > s.Completed+s.Canceled || s.Completed+s.Canceled > s.Submitted || s.Panicked > s.Completed {
				t.Errorf("inconsistent snapshot: %+v", s)
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	require.Positive(t, <-checked)
}

// On a pool that runs its own completion goroutine RunCompletions does
// nothing and returns 0 from any goroutine: a Callback (where, with an
// external loop, it would deliver the rest of the batch nested), a Func
// (where, with an external loop, it is not allowed) and any other goroutine.
func TestRunCompletionsOwnLoopDoesNothing(t *testing.T) {
	noLeaks(t)
	p := newPool(t)
	require.Zero(t, p.RunCompletions(), "from another goroutine")
	var fromFunc, fromCallback int
	require.NoError(t, p.SubmitCo(context.Background(), func() error {
		fromFunc = p.RunCompletions()
		return nil
	}))
	done := make(chan struct{})
	_, err := p.Submit(func() error { return nil }, func(error) {
		fromCallback = p.RunCompletions()
		close(done)
	})
	require.NoError(t, err)
	<-done
	require.Zero(t, fromFunc, "from a Func")
	require.Zero(t, fromCallback, "from a Callback")
}

// A RunCompletions nested in a Callback delivers the rest of the batch as a
// drain of its own: each call returns the callbacks it ran itself, and Stats
// counts two drains of one callback each (as RunCompletions and Stats
// document).
func TestNestedRunCompletionsIsADrainOfItsOwn(t *testing.T) {
	p, ta := newOneWorkerExternal(t)
	nested := -1
	hold := batchOfThree(t, p, ta, func(error) { nested = p.RunCompletions() })
	waitReadable(t, p.Fd()) // the first two requests are published
	outer := p.RunCompletions()
	require.NoError(t, ta.requireOnce(t, 1))
	require.Equal(t, 1, nested, "the nested call ran the second callback")
	require.Equal(t, 1, outer, "the outer call ran the first")
	s := p.Stats()
	require.Equal(t, [3]uint64{2, 2, 1}, [3]uint64{s.Delivered, s.Drains, s.MaxDrain})
	hold.open()
	require.NoError(t, p.Close())
}

// Stats.Drains counts the drains that delivered at least one callback: a
// RunCompletions that finds nothing to deliver is no drain, before or after
// one that delivered.
func TestRunCompletionsThatDeliversNothingIsNoDrain(t *testing.T) {
	noLeaks(t)
	p, ta := newOneWorkerExternal(t)
	require.Zero(t, p.RunCompletions())
	require.Zero(t, p.Stats().Drains, "a RunCompletions that delivered nothing")
	_, err := p.Submit(func() error { return nil }, ta.cb(0))
	require.NoError(t, err)
	runUntilDelivered(t, p, 1)
	require.NoError(t, ta.requireOnce(t, 0))
	require.Zero(t, p.RunCompletions())
	s := p.Stats()
	require.Equal(t, [3]uint64{1, 1, 1}, [3]uint64{s.Delivered, s.Drains, s.MaxDrain})
}
