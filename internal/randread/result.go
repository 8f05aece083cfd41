package randread

import "time"

// Result is what one Run did. The counters of the notifiers and the loop are
// read as the last job finishes, so they can miss the last write or batch of
// each job: negligible over many reads.
type Result struct {
	IOs       uint64        // reads completed and checked
	Elapsed   time.Duration // from the first submit to the last check
	CPU       time.Duration // user+system CPU time of the whole process meanwhile
	IRQWrites uint64        // eventfd writes to the jobs' notifiers
	Drains    uint64        // batches the completion loop delivered
	Delivered uint64        // completions the loop delivered
	LoopWakes uint64        // wake-ups written to the completion loop; counted by the Pool design alone, 0 for the others
	SpinHits  uint64        // spins of the pool's workers that ended with the spinner taking a request; the Pool design alone
	Latency   Histogram     // submit to the job seeing the completion
}

// counters is a snapshot of the cumulative counters a Result is a delta of.
type counters struct {
	loop loopStats
	irq  uint64
}

func (w *Workload) snapshot() counters {
	c := counters{loop: w.eng.stats()}
	for _, j := range w.jobs {
		c.irq += j.irq.Stats().Writes
	}
	return c
}

func (r *Result) add(after, before counters) {
	r.IRQWrites += after.irq - before.irq
	r.Drains += after.loop.drains - before.loop.drains
	r.Delivered += after.loop.delivered - before.loop.delivered
	r.LoopWakes += after.loop.wakes - before.loop.wakes
	r.SpinHits += after.loop.spinHits - before.loop.spinHits
}

// Merge adds o to r, for figures over several runs.
func (r *Result) Merge(o *Result) {
	r.IOs += o.IOs
	r.Elapsed += o.Elapsed
	r.CPU += o.CPU
	r.IRQWrites += o.IRQWrites
	r.Drains += o.Drains
	r.Delivered += o.Delivered
	r.LoopWakes += o.LoopWakes
	r.SpinHits += o.SpinHits
	r.Latency.Merge(&o.Latency)
}

// IOPS returns reads per second.
func (r *Result) IOPS() float64 { return ratio(float64(r.IOs), r.Elapsed.Seconds()) }

// CPUPerIO returns the process's CPU time per read.
func (r *Result) CPUPerIO() time.Duration {
	return time.Duration(ratio(float64(r.CPU), float64(r.IOs)))
}

// Cores returns the cores the process kept busy on average: CPU time over
// wall time.
func (r *Result) Cores() float64 { return ratio(r.CPU.Seconds(), r.Elapsed.Seconds()) }

// WritesPerIO returns irq eventfd writes per read.
func (r *Result) WritesPerIO() float64 { return ratio(float64(r.IRQWrites), float64(r.IOs)) }

// PerDrain returns the average completions delivered per batch.
func (r *Result) PerDrain() float64 { return ratio(float64(r.Delivered), float64(r.Drains)) }

// WakesPerIO returns completion-loop wake-ups per read: 0 for a design
// other than Pool, which does not count them.
func (r *Result) WakesPerIO() float64 { return ratio(float64(r.LoopWakes), float64(r.IOs)) }

// SpinHitsPerDrain returns the pool's spins that paid off per batch
// delivered: near 1 at depth when every round's first request found a worker
// spinning for it, and so a processor awake; 0 for a design other than
// Pool.
func (r *Result) SpinHitsPerDrain() float64 { return ratio(float64(r.SpinHits), float64(r.Drains)) }

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
