package threadpool_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

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
