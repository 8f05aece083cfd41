package threadpool_test

import (
	"runtime"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchio/threadpool"
)

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
