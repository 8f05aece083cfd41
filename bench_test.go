package threadpool_test

import (
	"fmt"
	"testing"

	"github.com/batchio/threadpool/internal/randread"
)

// BenchmarkRandRead is fio's randread (bs=4k) against a virtio disk served by
// the pool's completion loop, with the three ways of notifying the jobs. One
// op is one 4 KiB read; compare the modes with
//
//	benchstat -col /mode
func BenchmarkRandRead(b *testing.B) {
	f := openDataFile(b)
	for _, depth := range []int{1, 64} {
		for _, jobs := range []int{1, 8} {
			for _, mode := range randread.Modes {
				name := fmt.Sprintf("iodepth=%d/numjobs=%d/mode=%v", depth, jobs, mode)
				b.Run(name, func(b *testing.B) {
					benchRandRead(b, randread.Config{File: f, IODepth: depth, NumJobs: jobs, Mode: mode})
				})
			}
		}
	}
}

// BenchmarkRandReadDesign runs one randread job (batched notifications) on the
// pool and on what a Go program would use instead: a goroutine per request,
// or a fixed set of workers fed by a channel, both sending their results on a
// channel to one loop goroutine. Compare with
//
//	benchstat -col /design
func BenchmarkRandReadDesign(b *testing.B) {
	f := openDataFile(b)
	for _, depth := range []int{1, 64} {
		for _, design := range randread.Designs {
			b.Run(fmt.Sprintf("iodepth=%d/design=%v", depth, design), func(b *testing.B) {
				benchRandRead(b, randread.Config{File: f, IODepth: depth, NumJobs: 1, Mode: randread.Defer, Design: design})
			})
		}
	}
}

// benchRandRead runs b.N reads of c (whose File is set) after a warm-up that fills every job's
// depth twice, so that the steady state alone is measured.
func benchRandRead(b *testing.B, c randread.Config) {
	c.Size = *randreadSize
	c.BS = 4096
	w, err := randread.New(c)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Run(int64(2 * c.IODepth * c.NumJobs)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	r, err := w.Run(int64(b.N))
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if r.IOs != uint64(b.N) {
		b.Fatalf("%d reads checked, want %d", r.IOs, b.N)
	}
	b.ReportMetric(r.IOPS(), "IOPS")
	b.ReportMetric(float64(r.Latency.Quantile(0.5)), "p50-ns")
	b.ReportMetric(float64(r.Latency.Quantile(0.99)), "p99-ns")
	b.ReportMetric(r.WritesPerIO(), "irqwrites/IO")
	b.ReportMetric(r.PerDrain(), "IOs/drain")
	b.ReportMetric(r.WakesPerIO(), "loopwakes/IO")
}
