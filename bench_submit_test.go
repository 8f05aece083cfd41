package threadpool_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/batchio/threadpool"
)

// roundTripper performs n requests with an empty Func, keeping up to inflight
// of them outstanding: every completion, on the loop goroutine, submits the
// next one.
type roundTripper interface {
	run(b *testing.B, n, inflight int)
	close()
}

// BenchmarkSubmit measures a Submit-to-callback round trip with an empty
// Func: inflight=1 is the latency of one request, inflight=64 the throughput
// with 64 outstanding. design=goroutine is the usual Go way without the
// library: a goroutine per request sends its result on a channel to one loop
// goroutine. Compare with
//
//	benchstat -col /design
func BenchmarkSubmit(b *testing.B) {
	for _, inflight := range []int{1, 64} {
		b.Run(fmt.Sprintf("inflight=%d/design=pool", inflight), func(b *testing.B) {
			benchRoundTrips(b, newPoolTripper(b), inflight)
		})
		b.Run(fmt.Sprintf("inflight=%d/design=goroutine", inflight), func(b *testing.B) {
			benchRoundTrips(b, newGoroutineTripper(), inflight)
		})
	}
}

// BenchmarkLoopWake compares the two ways workers wake the pool's own
// completion goroutine: a channel (the default) and an eventfd waited on
// through the netpoller (WithEventfdLoop). Compare with
//
//	benchstat -col /wake
func BenchmarkLoopWake(b *testing.B) {
	for _, inflight := range []int{1, 64} {
		b.Run(fmt.Sprintf("inflight=%d/wake=chan", inflight), func(b *testing.B) {
			benchRoundTrips(b, newPoolTripper(b), inflight)
		})
		b.Run(fmt.Sprintf("inflight=%d/wake=eventfd", inflight), func(b *testing.B) {
			benchRoundTrips(b, newPoolTripper(b, threadpool.WithEventfdLoop()), inflight)
		})
	}
}

// benchRoundTrips warms t up, then measures b.N round trips.
func benchRoundTrips(b *testing.B, t roundTripper, inflight int) {
	defer t.close()
	t.run(b, 2*inflight, inflight)
	b.ReportAllocs()
	b.ResetTimer()
	t.run(b, b.N, inflight)
	b.StopTimer()
}

// tripCounter hands out the requests of one run and signals its end.
type tripCounter struct {
	toIssue   atomic.Int64  // requests not yet submitted; any goroutine
	completed int           // loop goroutine only
	want      int           // written before the run starts
	done      chan struct{} // closed by the loop after the last completion
}

func (c *tripCounter) start(n int) {
	c.toIssue.Store(int64(n))
	c.completed, c.want = 0, n
	c.done = make(chan struct{})
}

// take reports whether one more request may be submitted.
func (c *tripCounter) take() bool { return c.toIssue.Add(-1) >= 0 }

// completeOne counts a completion on the loop goroutine and reports whether
// it was the run's last; the counter then belongs to the next start.
func (c *tripCounter) completeOne() bool {
	c.completed++
	if c.completed == c.want {
		close(c.done)
		return true
	}
	return false
}

// poolTripper runs the round trips on a Pool.
type poolTripper struct {
	b      *testing.B
	p      *threadpool.Pool
	c      tripCounter
	failed atomic.Bool
	fn     threadpool.Func
	cb     threadpool.Callback
}

func newPoolTripper(b *testing.B, opts ...threadpool.Option) *poolTripper {
	p, err := threadpool.New(opts...)
	if err != nil {
		b.Fatal(err)
	}
	t := &poolTripper{b: b, p: p, fn: func() error { return nil }}
	t.cb = t.complete
	return t
}

func (t *poolTripper) submit() {
	if _, err := t.p.Submit(t.fn, t.cb); err != nil {
		t.failed.Store(true)
		t.b.Error(err)
	}
}

// complete is the Callback: count, and submit the next request. Loop only.
func (t *poolTripper) complete(err error) {
	if err != nil {
		t.b.Error(err)
	}
	if t.c.take() {
		t.submit()
	}
	t.c.completeOne()
}

func (t *poolTripper) run(b *testing.B, n, inflight int) {
	t.c.start(n)
	for range min(n, inflight) {
		if t.c.take() {
			t.submit()
		}
	}
	if !t.failed.Load() {
		<-t.c.done
	}
}

func (t *poolTripper) close() { t.p.Close() }

// goroutineTripper is the baseline: go fn() per request, results on a
// channel to one loop goroutine.
type goroutineTripper struct {
	c       tripCounter
	results chan error
	exec    func()        // a goroutine body: run the Func, send its result
	runs    chan struct{} // one token per run for the loop goroutine
	stopped chan struct{} // closed when the loop goroutine returned
}

func newGoroutineTripper() *goroutineTripper {
	t := &goroutineTripper{
		results: make(chan error, 64),
		runs:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	fn := func() error { return nil }
	t.exec = func() { t.results <- fn() }
	go t.loop()
	return t
}

// loop receives results and starts the next request. Loop goroutine.
func (t *goroutineTripper) loop() {
	defer close(t.stopped)
	for range t.runs {
		for last := false; !last; {
			if err := <-t.results; err != nil {
				panic(err)
			}
			if t.c.take() {
				go t.exec()
			}
			last = t.c.completeOne()
		}
	}
}

func (t *goroutineTripper) run(_ *testing.B, n, inflight int) {
	t.c.start(n)
	t.runs <- struct{}{}
	for range min(n, inflight) {
		if t.c.take() {
			go t.exec()
		}
	}
	<-t.c.done
}

func (t *goroutineTripper) close() {
	close(t.runs)
	<-t.stopped
}
