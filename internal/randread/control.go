package randread

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// runControl is what a Workload and a Ceiling share: the stop flag of the
// current run and the progress counter.
type runControl struct {
	// state is the number of the current run times two, plus one once the
	// run is to stop: its timer or a failing reader sets the stop, and a
	// timer sets it only while its own run is the current one.
	state  atomic.Uint64
	closed bool // set by Close; Run, RunFor and Close never run at once
	// progress is written by every reader while the fields around it (the
	// stop flag, the file, the block count, the epoch) are read on every
	// read: it has a cache line of its own.
	_        [cacheLinePad]byte
	progress atomic.Uint64 // reads checked since New or NewCeiling
	_        [cacheLinePad]byte
}

// cacheLinePad keeps what one goroutine writes often off the cache lines
// that others read or write.
const cacheLinePad = 64

// open refuses a run once Close has been called.
func (c *runControl) open() error {
	if c.closed {
		return ErrClosed
	}
	return nil
}

// Progress returns how many reads were checked since the Workload or Ceiling
// was made. Any goroutine may call it at any time. During a run each job or
// thread adds its reads in batches of up to progressBatch (64), so the count
// lags by fewer than that per job or thread; once a run has returned it is
// exact.
func (c *runControl) Progress() uint64 { return c.progress.Load() }

// begin starts a new run, its stop flag clear: before its timer (stopAfter)
// starts, so that a time up before the readers start is not undone.
func (c *runControl) begin() { c.state.Store((c.state.Load()>>1 + 1) << 1) }

// stopping tells whether the current run is to stop.
func (c *runControl) stopping() bool { return c.state.Load()&1 != 0 }

// halt stops the current run.
func (c *runControl) halt() { c.state.Or(1) }

// stopAfter ends the current run after d; the caller stops the timer once
// the run has returned. A timer that has fired by then may still call its
// function later, during another run: that function stops its own run
// alone, so it then does nothing.
func (c *runControl) stopAfter(d time.Duration) *time.Timer {
	run := c.state.Load() &^ 1
	return afterFunc(d, func() { c.state.CompareAndSwap(run, run|1) })
}

// afterFunc starts a run's timer; tests replace it.
var afterFunc = time.AfterFunc

// checkCount refuses a negative read count for Run: its share per job or
// thread would be negative, which means "until the run stops".
func checkCount(n int64) error {
	if n < 0 {
		return fmt.Errorf("randread: %d reads: the count must not be negative", n)
	}
	return nil
}

// share returns the quota of part i of parts when n reads are spread evenly.
func share(n int64, parts, i int) int64 {
	per, extra := n/int64(parts), n%int64(parts)
	if int64(i) < extra {
		return per + 1
	}
	return per
}

// cpuClock reads the process's CPU time; tests replace it.
var cpuClock = ProcessCPU

// timed runs body(0) to body(n-1) on n goroutines, waits for them all, and
// returns the wall time they took and the CPU time the whole process used
// meanwhile. The process's CPU time is read (getrusage) once before the first
// goroutine starts and once after the last one has ended, never in between,
// both inside the wall-clock interval, so that the CPU time never covers
// more than the wall time does.
func timed(n int, body func(i int)) (wall, cpu time.Duration) {
	var wg sync.WaitGroup
	start := time.Now()
	cpu0 := cpuClock()
	for i := range n {
		wg.Go(func() { body(i) })
	}
	wg.Wait()
	cpu = cpuClock() - cpu0
	return time.Since(start), cpu
}
