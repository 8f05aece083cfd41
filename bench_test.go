package threadpool_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchio/threadpool"
	"github.com/batchio/threadpool/internal/randread"
)

// BenchmarkRandRead is fio's randread (bs=4k) against a virtio disk served by
// the pool's completion loop, with the three ways of notifying the jobs, and
// the machine's ceiling for the same reads. One op is one 4 KiB read.
//
// Every iodepth/numjobs group has a sub-benchmark per mode (each, defer,
// coalesce) and one named mode=ceiling: randread.Ceiling, one goroutine per
// GOMAXPROCS locked to its thread, doing the same preads of the same file
// back to back with no pool and no completion delivery. The ceiling does not
// depend on iodepth or numjobs; it is measured in every group so that it
// runs beside the modes it is compared with. Since the group is the row and
// the mode the column,
//
//	benchstat -col /mode
//
// puts the four side by side, each group on one row, with the ratios to
// each; list the modes to pick the baseline and the columns, for example
// defer against the ceiling:
//
//	benchstat -col '/mode@(ceiling defer)'
//
// Besides the timing, every sub-benchmark reports IOPS, cpu-ns/IO (the
// process's user+system CPU time per read, from getrusage before and after
// the measured reads) and cores (that CPU time over the wall time); the modes
// also report latency quantiles and notification counts per read.
// loopwakes/IO, the completion loop's wake-ups per read, is the pool's
// Stats().LoopWakes, and spinhits/drain its Stats().SpinHits per batch
// delivered (about 1 when a worker spinning between rounds took each
// round's first request): only the pool counts them, so only its
// sub-benchmarks report them.
func BenchmarkRandRead(b *testing.B) {
	f := openDataFile(b)
	for _, depth := range []int{1, 64} {
		for _, jobs := range []int{1, 8} {
			for _, mode := range randread.Modes {
				name := fmt.Sprintf("iodepth=%d/numjobs=%d/mode=%v", depth, jobs, mode)
				b.Run(name, func(b *testing.B) {
					benchWorkload(b, randread.Config{File: f, IODepth: depth, NumJobs: jobs, Mode: mode})
				})
			}
			b.Run(fmt.Sprintf("iodepth=%d/numjobs=%d/mode=ceiling", depth, jobs), func(b *testing.B) {
				benchCeiling(b, f)
			})
		}
	}
}

// BenchmarkRandReadDesign runs one randread job (batched notifications) on the
// pool and on what a Go program would use instead: a goroutine per request,
// or a fixed set of workers fed by a channel, both sending their results on a
// channel to one loop goroutine. design=ceiling is randread.Ceiling, as in
// BenchmarkRandRead. Compare with
//
//	benchstat -col /design
func BenchmarkRandReadDesign(b *testing.B) {
	f := openDataFile(b)
	for _, depth := range []int{1, 64} {
		for _, design := range randread.Designs {
			b.Run(fmt.Sprintf("iodepth=%d/design=%v", depth, design), func(b *testing.B) {
				benchWorkload(b, randread.Config{File: f, IODepth: depth, NumJobs: 1, Mode: randread.Defer, Design: design})
			})
		}
		b.Run(fmt.Sprintf("iodepth=%d/design=ceiling", depth), func(b *testing.B) {
			benchCeiling(b, f)
		})
	}
}

// benchWorkload measures the workload c (whose File is set) after a warm-up
// that fills every job's depth twice, and reports its notification figures.
func benchWorkload(b *testing.B, c randread.Config) {
	c.Size = *randreadSize
	c.BS = 4096
	w, err := randread.New(c)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	r := benchReads(b, w, int64(2*c.IODepth*c.NumJobs))
	for _, m := range workloadMetrics(c.Design, &r) {
		b.ReportMetric(m.value, m.unit)
	}
}

// metric is one figure a benchmark reports, with its unit.
type metric struct {
	value float64
	unit  string
}

// workloadMetrics returns the notification figures of a run of design:
// latency quantiles, irq writes per read, completions per batch, and the
// loop's wake-ups per read and the spins that paid off per batch for the
// pool only, the one design that counts them (a channel-fed loop's wake-ups
// are not counted, so a 0 would claim wake-ups that did not happen as
// none).
func workloadMetrics(design randread.Design, r *randread.Result) []metric {
	ms := []metric{
		{float64(r.Latency.Quantile(0.5)), "p50-ns"},
		{float64(r.Latency.Quantile(0.99)), "p99-ns"},
		{r.WritesPerIO(), "irqwrites/IO"},
		{r.PerDrain(), "IOs/drain"},
	}
	if design == randread.Pool {
		ms = append(ms, metric{r.WakesPerIO(), "loopwakes/IO"}, metric{r.SpinHitsPerDrain(), "spinhits/drain"})
	}
	return ms
}

// benchCeiling measures randread.Ceiling on f with GOMAXPROCS threads.
func benchCeiling(b *testing.B, f *os.File) {
	c, err := randread.NewCeiling(randread.CeilingConfig{File: f, Size: *randreadSize, BS: 4096})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	benchReads(b, c, int64(64*c.Threads()))
}

// benchReads runs warm reads of s unmeasured, then b.N measured ones, and
// reports IOPS, cpu-ns/IO and cores. A failed or short read, or a count
// other than b.N, fails the benchmark.
func benchReads(b *testing.B, s randread.Runner, warm int64) randread.Result {
	if _, err := s.Run(warm); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	r, err := s.Run(int64(b.N))
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if r.IOs != uint64(b.N) {
		b.Fatalf("%d reads checked, want %d", r.IOs, b.N)
	}
	b.ReportMetric(r.IOPS(), "IOPS")
	b.ReportMetric(float64(r.CPUPerIO()), "cpu-ns/IO")
	b.ReportMetric(r.Cores(), "cores")
	return r
}

// BenchmarkIdle measures what an open pool costs when nothing is submitted:
// each op delivers a burst of 64 empty requests, then leaves the pool idle
// for 10 milliseconds. idle-cores is the process's CPU time (getrusage) during
// those idle intervals over their wall time: about 0, since only a spin
// begun by the burst's last worker (at most DefaultSpin) and the runtime's
// own bookkeeping may run then. spin=0 runs the same WithSpin(0).
func BenchmarkIdle(b *testing.B) {
	b.Run("spin=default", func(b *testing.B) { benchIdle(b) })
	b.Run("spin=0", func(b *testing.B) { benchIdle(b, threadpool.WithSpin(0)) })
}

func benchIdle(b *testing.B, opts ...threadpool.Option) {
	p, err := threadpool.New(opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	batch := p.NewBatch()
	var wg sync.WaitGroup
	done := func(err error) {
		if err != nil {
			b.Error(err)
		}
		wg.Done()
	}
	var idleCPU, idleWall time.Duration
	b.ReportAllocs()
	for b.Loop() {
		wg.Add(64)
		for range 64 {
			if err := batch.Add(func() error { return nil }, done); err != nil {
				b.Fatal(err)
			}
		}
		if err := batch.Flush(); err != nil {
			b.Fatal(err)
		}
		wg.Wait()
		// The CPU time is read inside the wall-clock interval.
		start := time.Now()
		cpu := randread.ProcessCPU()
		time.Sleep(10 * time.Millisecond)
		idleCPU += randread.ProcessCPU() - cpu
		idleWall += time.Since(start)
	}
	b.ReportMetric(float64(idleCPU)/float64(idleWall), "idle-cores")
}

// roundTripper performs n requests with an empty Func, keeping up to inflight
// of them outstanding: every completion, on the loop goroutine, submits the
// next one.
type roundTripper interface {
	run(b *testing.B, n, inflight int)
	close()
}

// BenchmarkSubmit measures a Submit-to-callback round trip with an empty
// Func: inflight=1 is the latency of one request, inflight=64 the throughput
// with 64 outstanding. The other designs are the usual Go ways without the
// library, each sending its results on a channel to one loop goroutine that
// issues the next request: design=goroutine starts a goroutine per request;
// design=chanpool feeds min(inflight, DefaultMaxWorkers) long-lived worker
// goroutines through a channel. With one request in flight, chanpool is the
// least any design with the pool's contract (Funcs on workers, callbacks on
// one loop goroutine, both parked while there is nothing to do) can cost:
// two channel hand-offs per round trip and no bookkeeping. Compare with
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
		b.Run(fmt.Sprintf("inflight=%d/design=chanpool", inflight), func(b *testing.B) {
			benchRoundTrips(b, newChanPoolTripper(min(inflight, threadpool.DefaultMaxWorkers)), inflight)
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
	if b.Failed() {
		return
	}
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
	done      chan struct{} // closed by the loop after the last completion, or by abort
	aborted   sync.Once     // reset before the run starts
}

func (c *tripCounter) start(n int) {
	c.toIssue.Store(int64(n))
	c.completed, c.want = 0, n
	c.done = make(chan struct{})
	c.aborted = sync.Once{}
}

// abort ends the run early, from any goroutine: a request could not be
// submitted, so the last completion will never come.
func (c *tripCounter) abort() { c.aborted.Do(func() { close(c.done) }) }

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
	b  *testing.B
	p  *threadpool.Pool
	c  tripCounter
	fn threadpool.Func
	cb threadpool.Callback
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

// submit submits one request; a request it cannot submit fails the
// benchmark and ends the run.
func (t *poolTripper) submit() {
	if _, err := t.p.Submit(t.fn, t.cb); err != nil {
		t.b.Error(err)
		t.c.abort()
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
	<-t.c.done
}

func (t *poolTripper) close() { t.p.Close() }

// goroutineTripper is the baseline: go fn() per request, results on a
// channel to one loop goroutine. With reqs set, it is the chanpool design
// instead: worker goroutines take the requests from reqs.
type goroutineTripper struct {
	c       tripCounter
	err     error // the run's first failed request: loop goroutine, read after c.done
	results chan error
	exec    func()        // a goroutine body: run the Func, send its result
	runs    chan struct{} // one token per run for the loop goroutine
	stopped chan struct{} // closed when the loop goroutine returned
	// chanpool only: one token per request for the workers, and the
	// workers' exits.
	reqs    chan struct{}
	workers sync.WaitGroup
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

// newChanPoolTripper is the chanpool design with n workers.
func newChanPoolTripper(n int) *goroutineTripper {
	t := newGoroutineTripper()
	t.reqs = make(chan struct{}, 64)
	t.workers.Add(n)
	for range n {
		go func() {
			defer t.workers.Done()
			for range t.reqs {
				t.exec()
			}
		}()
	}
	return t
}

// issue starts one request: a goroutine, or a token for the workers.
func (t *goroutineTripper) issue() {
	if t.reqs != nil {
		t.reqs <- struct{}{}
	} else {
		go t.exec()
	}
}

// loop receives results and starts the next request. Loop goroutine.
func (t *goroutineTripper) loop() {
	defer close(t.stopped)
	for range t.runs {
		for last := false; !last; {
			if err := <-t.results; err != nil && t.err == nil {
				t.err = err
			}
			if t.c.take() {
				t.issue()
			}
			last = t.c.completeOne()
		}
	}
}

func (t *goroutineTripper) run(b *testing.B, n, inflight int) {
	t.c.start(n)
	t.err = nil
	t.runs <- struct{}{}
	for range min(n, inflight) {
		if t.c.take() {
			t.issue()
		}
	}
	<-t.c.done
	if t.err != nil {
		b.Error(t.err)
	}
}

func (t *goroutineTripper) close() {
	close(t.runs)
	<-t.stopped
	if t.reqs != nil {
		close(t.reqs)
		t.workers.Wait()
	}
}

// The random-read benchmarks read a data file of -randread.size bytes,
// 64 MiB by default. Without -randread.file each top-level benchmark makes one
// of random bytes in its temporary directory, shared by its sub-benchmarks
// and removed when it ends; with -randread.file that file is used (made if it
// is missing; one too short fails the benchmark and is left alone) and left
// in place.
var (
	randreadFile = flag.String("randread.file", "", "data file for the random-read benchmarks (default: a temporary file per benchmark)")
	randreadSize = flag.Int64("randread.size", 64<<20, "bytes of the data file the random-read benchmarks read")
)

// openDataFile prepares the data file, reads it through once so that it is in
// the page cache, and opens it; the file is closed when b ends.
func openDataFile(b *testing.B) *os.File {
	b.Helper()
	path := *randreadFile
	if path == "" {
		path = filepath.Join(b.TempDir(), "randread.dat")
	}
	if _, err := randread.PrepareFile(path, *randreadSize); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// The workload benchmarks report only what was measured: every design's
// notification figures, and the loop's wake-ups and the spins that paid off
// for the pool alone, the one design that counts them.
func TestWorkloadMetricsReportOnlyWhatIsCounted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data")
	_, err := randread.PrepareFile(path, 64<<10)
	require.NoError(t, err)
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	for _, d := range randread.Designs {
		w, err := randread.New(randread.Config{File: f, Size: 64 << 10, BS: 4096, IODepth: 4, NumJobs: 2, Mode: randread.Defer, Design: d})
		require.NoError(t, err)
		r, err := w.Run(200)
		w.Close()
		require.NoError(t, err)
		got := map[string]float64{}
		for _, m := range workloadMetrics(d, &r) {
			got[m.unit] = m.value
		}
		for _, unit := range []string{"p50-ns", "p99-ns", "irqwrites/IO", "IOs/drain"} {
			require.Positive(t, got[unit], "%v: %s", d, unit)
		}
		wakes, reported := got["loopwakes/IO"]
		require.Equal(t, d == randread.Pool, reported, "%v reports loopwakes/IO", d)
		if reported {
			require.Positive(t, wakes, "the pool's loop was woken")
		}
		_, reported = got["spinhits/drain"]
		require.Equal(t, d == randread.Pool, reported, "%v reports spinhits/drain", d)
	}
}
