package threadpool

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
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

func TestShutdownContextEndsFallsBackToClose(t *testing.T) {
	p, err := New(WithMaxWorkers(1))
	require.NoError(t, err)
	g := newGate(1)
	results := make(chan error, 3)
	cb := func(err error) { results <- err }
	_, err = p.Submit(g.fn(0, nil), cb)
	require.NoError(t, err)
	<-g.started
	for i := 0; i < 2; i++ {
		_, err = p.Submit(func() error { return nil }, cb)
		require.NoError(t, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	go func() {
		// Close (inside Shutdown) cancels the queued ones, then waits for
		// the running one.
		require.ErrorIs(t, <-results, ErrCanceled)
		require.ErrorIs(t, <-results, ErrCanceled)
		g.release()
	}()
	require.ErrorIs(t, p.Shutdown(ctx), context.Canceled)
	require.NoError(t, <-results)
	s := p.Stats()
	require.Equal(t, uint64(3), s.Delivered)
	require.Equal(t, uint64(2), s.Canceled)
}

func TestSubmitRacingClose(t *testing.T) {
	for round := 0; round < 20; round++ {
		p, err := New(WithMaxWorkers(4))
		require.NoError(t, err)
		var accepted, called atomic.Int64
		start := make(chan struct{})
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for {
					_, err := p.Submit(func() error { return nil }, func(error) { called.Add(1) })
					if err != nil {
						require.ErrorIs(t, err, ErrClosed)
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
		for i := 0; i < 3; i++ {
			cwg.Add(1)
			go func() { defer cwg.Done(); require.NoError(t, p.Close()) }()
		}
		cwg.Wait()
		calledAtClose := called.Load()
		wg.Wait() // the submitters have counted what was accepted
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
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); require.NoError(t, p.Close()) }()
	}
	wg.Wait()
	require.NoError(t, p.Close())
	require.NoError(t, p.Shutdown(context.Background()))
	require.Zero(t, p.Stats().Workers)
}
