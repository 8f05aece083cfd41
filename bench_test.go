package threadpool_test

import (
	"fmt"
	"os"
	"testing"

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
	b.ReportMetric(float64(r.Latency.Quantile(0.5)), "p50-ns")
	b.ReportMetric(float64(r.Latency.Quantile(0.99)), "p99-ns")
	b.ReportMetric(r.WritesPerIO(), "irqwrites/IO")
	b.ReportMetric(r.PerDrain(), "IOs/drain")
	b.ReportMetric(r.WakesPerIO(), "loopwakes/IO")
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
