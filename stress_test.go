package threadpool_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchio/threadpool"
)

// Per-request state bits in the stress test: the low 16 bits count callbacks.
const (
	stressCalls    = 1<<16 - 1
	stressRan      = 1 << 16 // the Func ran
	stressCanceled = 1 << 17 // the callback got ErrCanceled
	stressByCancel = 1 << 18 // Cancel returned true for it
	stressBadErr   = 1 << 19 // the callback got another error
)

// stressSize is how many requests the stress test submits in all.
func stressSize() int {
	if raceEnabled {
		return 100_000
	}
	return 1_000_000
}

// stressHandle is a recent request that a submitter may cancel later.
type stressHandle struct {
	h threadpool.Handle
	i int
}

// stressSubmit submits requests lo..hi-1, each bumping its state word in
// st; it cancels a fresh or a recent (maybe long done, maybe recycled)
// request now and then, and when churn is set it moves the worker limits
// between 1 and 64.
func stressSubmit(p *threadpool.Pool, st []atomic.Uint32, lo, hi int, churn bool, delivered *sync.WaitGroup) error {
	rng := rand.New(rand.NewPCG(uint64(lo), uint64(hi)))
	var recent [64]stressHandle
	for i := lo; i < hi; i++ {
		w := &st[i]
		h, err := p.Submit(func() error { w.Or(stressRan); return nil }, func(err error) {
			switch {
			case err == nil:
			case errors.Is(err, threadpool.ErrCanceled):
				w.Or(stressCanceled)
			default:
				w.Or(stressBadErr)
			}
			w.Add(1)
			delivered.Done()
		})
		if err != nil {
			return err
		}
		slot := &recent[rng.IntN(len(recent))]
		switch r := rng.IntN(16); {
		case r < 2:
			if p.Cancel(h) {
				w.Or(stressByCancel)
			}
		case r < 4:
			if slot.h != (threadpool.Handle{}) && p.Cancel(slot.h) {
				st[slot.i].Or(stressByCancel)
			}
		}
		*slot = stressHandle{h, i}
		if churn && i%512 == 0 {
			max := 1 + rng.IntN(64)
			if rng.IntN(4) == 0 {
				max = 1
			} else if rng.IntN(3) == 0 {
				max = 64
			}
			if err := p.SetLimits(rng.IntN(max+1), max); err != nil {
				return err
			}
		}
	}
	return nil
}

// At least a million requests from eight submitters, with random cancels and
// the worker limits churning between 1 and 64 while the loop delivers: every
// request gets exactly one callback, a canceled one never ran, a request that
// ran was not canceled, and Stats agree. Race builds run fewer requests.
func TestStressExactlyOnce(t *testing.T) {
	noLeaks(t)
	n := stressSize()
	const submitters = 8
	p := newPool(t)
	st := make([]atomic.Uint32, n)
	var delivered sync.WaitGroup
	delivered.Add(n)
	errs := make(chan error, submitters)
	var wg sync.WaitGroup
	for g := range submitters {
		lo, hi := g*n/submitters, (g+1)*n/submitters
		wg.Go(func() { errs <- stressSubmit(p, st, lo, hi, g == 0, &delivered) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	delivered.Wait()
	require.NoError(t, p.Close())

	var ran, canceled, byCancel uint64
	for i := range st {
		w := st[i].Load()
		require.Empty(t, stressFault(w), "request %d", i)
		if w&stressCanceled != 0 {
			canceled++
		} else {
			ran++
		}
		if w&stressByCancel != 0 {
			byCancel++
		}
	}
	require.Equal(t, canceled, byCancel, "no Close cancels here: every cancel came from Cancel")
	require.Equal(t, counts{Submitted: uint64(n), Completed: ran, Canceled: canceled, Delivered: uint64(n)}, countsOf(p.Stats()))
	require.NotZero(t, canceled)
	require.NotZero(t, ran)
	t.Logf("%d requests: %d ran, %d canceled; %+v", n, ran, canceled, p.Stats())
}

// stressFault says what is wrong with a request's final state word, or "".
func stressFault(w uint32) string {
	switch {
	case w&stressCalls != 1:
		return fmt.Sprintf("%d callbacks", w&stressCalls)
	case w&stressBadErr != 0:
		return "a callback error other than ErrCanceled"
	case w&stressCanceled != 0 && w&stressRan != 0:
		return "canceled, yet its Func ran"
	case w&stressCanceled == 0 && w&stressRan == 0:
		return "neither ran nor canceled"
	case w&stressCanceled == 0 && w&stressByCancel != 0:
		return "Cancel returned true, yet it ran"
	}
	return ""
}

// raceReq is one request tried while Close races with the submitters.
type raceReq struct {
	calls atomic.Int32 // callbacks run
	err   error        // the callback's error; written by it, read after Close

	// Written by the submitter.
	accepted bool // Submit returned no error
	canceled bool // Cancel returned true
}

// submitUntilClosed submits to p until Submit reports ErrClosed, canceling
// every third request and moving the limits now and then; it calls warm once
// after its first 50 requests (or when refused before that), and after 1000
// waits for closing to be closed before it goes on.
func submitUntilClosed(t *testing.T, p *threadpool.Pool, warm func(), closing <-chan struct{}) []*raceReq {
	var reqs []*raceReq
	warm = sync.OnceFunc(warm)
	defer warm()
	for i := 0; ; i++ {
		switch i {
		case 50:
			warm()
		case 1000:
			<-closing
		}
		r := &raceReq{}
		reqs = append(reqs, r)
		h, err := p.Submit(func() error { return nil }, func(err error) { r.err = err; r.calls.Add(1) })
		if err != nil {
			require.ErrorIs(t, err, threadpool.ErrClosed)
			return reqs
		}
		r.accepted = true
		if i%3 == 0 {
			r.canceled = p.Cancel(h)
		}
		if i%64 == 0 {
			if err := p.SetLimits(0, 1+i%7); err != nil {
				require.ErrorIs(t, err, threadpool.ErrClosed)
			}
		}
	}
}

// Submit, Cancel, SubmitCo and SetLimits racing Close from many goroutines,
// in every loop mode: each accepted request gets exactly one callback (with
// ErrCanceled if Cancel said it canceled it), each refused one none, and the
// counters add up.
func TestSubmitRacesCloseEveryLoop(t *testing.T) {
	noLeaks(t)
	for _, mode := range loopModes {
		t.Run(mode.name, func(t *testing.T) {
			rounds := 10
			if raceEnabled {
				rounds = 3
			}
			for range rounds {
				p, err := threadpool.New(append(mode.opts, threadpool.WithMaxWorkers(4))...)
				require.NoError(t, err)
				const submitters = 8
				var warm sync.WaitGroup
				warm.Add(submitters)
				out := make([][]*raceReq, submitters)
				closing := make(chan struct{})
				var wg sync.WaitGroup
				for g := range submitters {
					wg.Go(func() { out[g] = submitUntilClosed(t, p, warm.Done, closing) })
				}
				var coOK atomic.Int64
				wg.Go(func() {
					for {
						err := p.SubmitCo(context.Background(), func() error { return nil })
						if err == nil || errors.Is(err, threadpool.ErrCanceled) {
							coOK.Add(1) // accepted; Close may have canceled it
							continue
						}
						require.ErrorIs(t, err, threadpool.ErrClosed)
						return
					}
				})
				warm.Wait()
				close(closing)
				// Close from the test goroutine: with an external loop it is
				// the loop goroutine, which never ran RunCompletions.
				require.NoError(t, p.Close())
				wg.Wait()
				var accepted, byCancel uint64
				for _, reqs := range out {
					for _, r := range reqs {
						if !r.accepted {
							require.Zero(t, r.calls.Load())
							continue
						}
						accepted++
						require.Equal(t, int32(1), r.calls.Load())
						if r.canceled {
							byCancel++
							require.ErrorIs(t, r.err, threadpool.ErrCanceled)
						} else if r.err != nil {
							require.ErrorIs(t, r.err, threadpool.ErrCanceled, "only Close may cancel it")
						}
					}
				}
				s := countsOf(p.Stats())
				require.Equal(t, accepted+uint64(coOK.Load()), s.Submitted)
				require.Equal(t, s.Submitted, s.Completed+s.Canceled)
				require.Equal(t, accepted, s.Delivered)
				require.GreaterOrEqual(t, s.Canceled, byCancel)
				require.Zero(t, s.Panicked)
			}
		})
	}
}

// Shutdown whose context has expired while work is queued and running
// cancels the queued requests and returns the context's error at once,
// without waiting for the running one; every callback still runs once, and a
// later Close waits for the running one.
func TestShutdownExpiredWithQueuedAndRunning(t *testing.T) {
	noLeaks(t)
	ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	for _, mode := range loopModes {
		t.Run(mode.name, func(t *testing.T) {
			const queued = 5
			p := newPool(t, append(mode.opts, threadpool.WithMaxWorkers(1))...)
			ta := newTally(queued + 1)
			hold := newGate()
			t.Cleanup(hold.open)
			started := make(chan struct{})
			_, err := p.Submit(func() error { close(started); hold.wait(); return nil }, ta.cb(0))
			require.NoError(t, err)
			<-started
			for i := 1; i <= queued; i++ {
				_, err := p.Submit(func() error { return nil }, ta.cb(i))
				require.NoError(t, err)
			}
			// Shutdown runs the external loop on its caller: hand it over.
			done := make(chan error, 1)
			go func() { done <- p.Shutdown(ctx) }()
			require.ErrorIs(t, <-done, context.DeadlineExceeded)
			require.Equal(t, uint64(queued), p.Stats().Canceled)
			if mode.external {
				require.Equal(t, uint64(queued), p.Stats().Delivered, "delivered by Shutdown on its caller")
			}
			closed := make(chan error, 1)
			go func() { closed <- p.Close() }()
			hold.open()
			require.NoError(t, <-closed)
			require.NoError(t, ta.requireOnce(t, 0))
			for i := 1; i <= queued; i++ {
				require.ErrorIs(t, ta.requireOnce(t, i), threadpool.ErrCanceled)
			}
			require.Equal(t, counts{Submitted: queued + 1, Completed: 1, Canceled: queued, Delivered: queued + 1}, countsOf(p.Stats()))
		})
	}
}
