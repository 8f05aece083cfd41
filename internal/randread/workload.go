// Package randread is the random-read model behind the IOPS comparison of
// batched and per-completion notifications: fio's randread (bs=4k) against a
// virtio disk served by one IOThread.
//
// numjobs jobs each play a virtqueue and the guest vCPU that drives it. A job
// keeps iodepth reads in flight, each one request (a pread at a random
// block-aligned offset) to the Design's executor; on the pool, a job records
// its requests in a Batch and flushes it once per round. The pool's
// completion loop plays the IOThread: each callback puts the request on its
// job's used list and notifies the job's irq eventfd as the Mode says. The
// job waits on that eventfd through the netpoller, takes every used
// request, checks that it read the whole block, and resubmits it, so the
// depth stays constant.
package randread

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"time"

	"github.com/batchio/threadpool"
)

// ErrShortRead is wrapped by the error of a run in which a read failed or
// returned less than a whole block.
var ErrShortRead = errors.New("randread: short read")

// ErrClosed is returned by Run and RunFor once Close has been called.
var ErrClosed = errors.New("randread: run after Close")

// Config describes a workload.
type Config struct {
	// File is read; it must hold at least Size bytes. The caller keeps it open
	// until Close has returned.
	File *os.File
	// Size is the span of File the offsets are drawn from; it must be at least
	// BS. Offsets are multiples of BS below Size/BS*BS.
	Size int64
	// BS is the size of every read, in bytes (4096 in the model).
	BS int
	// IODepth is the number of reads each job keeps in flight.
	IODepth int
	// NumJobs is the number of jobs.
	NumJobs int
	// Mode is how the completion loop notifies the jobs.
	Mode Mode
	// Design is what executes the reads; the zero value is the library.
	Design Design
}

func (c *Config) validate() error {
	if err := validateFile(c.File, c.Size, c.BS); err != nil {
		return err
	}
	switch {
	case c.IODepth <= 0:
		return fmt.Errorf("randread: iodepth %d must be positive", c.IODepth)
	case c.NumJobs <= 0:
		return fmt.Errorf("randread: numjobs %d must be positive", c.NumJobs)
	case c.IODepth > math.MaxInt/c.NumJobs:
		return fmt.Errorf("randread: iodepth %d times numjobs %d overflows", c.IODepth, c.NumJobs)
	}
	if err := CheckBuffers(c.IODepth*c.NumJobs, c.BS); err != nil {
		return fmt.Errorf("randread: iodepth %d times numjobs %d at bs %d: %w", c.IODepth, c.NumJobs, c.BS, err)
	}
	switch {
	case c.Mode < Each || c.Mode > Coalesce:
		return fmt.Errorf("randread: unknown mode %v", c.Mode)
	case c.Design < Pool || c.Design > ChanPool:
		return fmt.Errorf("randread: unknown design %v", c.Design)
	}
	return nil
}

// maxChanWorkers bounds the ChanPool design's workers like the pool's default
// maximum.
const maxChanWorkers = threadpool.DefaultMaxWorkers

// MaxBuffers bounds the bytes of read buffers a Workload (IODepth x NumJobs
// x BS) or a Ceiling (Threads x BS) allocates: 1 GiB.
const MaxBuffers = 1 << 30

// MaxInFlight bounds the reads a Workload keeps in flight (IODepth x
// NumJobs): each costs a few hundred bytes beside its buffer (the request,
// the pool's element or a goroutine), which MaxBuffers does not count, so
// that 2^30 one-byte reads would have taken some 170 GB.
const MaxInFlight = 1 << 20

// CheckBuffers returns an error stating the bound and the product unless n
// buffers of bs bytes, both positive, fit in MaxBuffers, and n is at most
// MaxInFlight.
func CheckBuffers(n, bs int) error {
	if n > MaxInFlight {
		return fmt.Errorf("%d reads in flight, above the bound of %d", n, MaxInFlight)
	}
	if n <= MaxBuffers/bs {
		return nil
	}
	need := new(big.Int).Mul(big.NewInt(int64(n)), big.NewInt(int64(bs)))
	return fmt.Errorf("%d buffers of %d bytes need %v bytes, above the bound of %d bytes (1 GiB)", n, bs, need, MaxBuffers)
}

// validateFile checks the fields a Config and a CeilingConfig share.
func validateFile(f *os.File, size int64, bs int) error {
	switch {
	case f == nil:
		return errors.New("randread: no file")
	case bs <= 0:
		return fmt.Errorf("randread: block size %d must be positive", bs)
	case size < int64(bs):
		return fmt.Errorf("randread: size %d is smaller than the block size %d", size, bs)
	}
	return nil
}

// Runner is one subject of the comparison, a Workload or a Ceiling, as the
// benchmarks and tpbench drive it. Run, RunFor and Close must not be called
// concurrently; Progress may be called at any time.
type Runner interface {
	// Run performs n reads and returns what happened; a read that fails or
	// comes back short stops the run with an error wrapping ErrShortRead.
	// A negative n is refused with an error, and nothing is read.
	Run(n int64) (Result, error)
	// RunFor reads for d, then waits for the reads in flight; errors as Run.
	RunFor(d time.Duration) (Result, error)
	// Progress returns how many reads were checked since the Runner was
	// made, in batches during a run (see runControl.Progress).
	Progress() uint64
	// Close releases what the Runner holds; the file stays open. Run and
	// RunFor return ErrClosed after it.
	Close()
}

// Workload is a set of jobs with their requests, notifiers and executor,
// ready to Run again and again. Run, RunFor and Close must not be called
// concurrently; Progress may be called at any time.
type Workload struct {
	// Written once in New.
	file   *os.File
	blocks int64
	mode   Mode
	eng    engine
	jobs   []*job
	epoch  time.Time

	runControl
}

var _ Runner = (*Workload)(nil)

// New builds a workload: the executor, the jobs, their notifiers and their
// requests. The caller must Close it. A Config that cannot hold (no File, a
// BS that is not positive or above Size, an IODepth or NumJobs that is not
// positive or whose product overflows an int or exceeds MaxInFlight, buffers
// of IODepth x NumJobs x BS bytes above MaxBuffers, an unknown Mode or
// Design) returns an error.
func New(c Config) (*Workload, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	w := &Workload{file: c.File, blocks: c.Size / int64(c.BS), mode: c.Mode, epoch: time.Now()}
	depth := c.IODepth * c.NumJobs
	switch c.Design {
	case Pool:
		e, err := newPoolEngine()
		if err != nil {
			return nil, err
		}
		w.eng = e
	case Goroutine:
		w.eng = newGoroutineEngine(depth)
	case ChanPool:
		w.eng = newChanPoolEngine(depth, min(depth, maxChanWorkers))
	}
	for i := range c.NumJobs {
		irq, err := threadpool.NewNotifier(threadpool.WithCoalescing(c.Mode == Coalesce))
		if err != nil {
			w.Close()
			return nil, err
		}
		j := &job{w: w, irq: irq, iss: w.eng.newIssuer()}
		j.pcg.Seed(rand.Uint64(), uint64(i))
		j.rng = rand.New(&j.pcg)
		for range c.IODepth {
			j.reqs = append(j.reqs, newRequest(j, c.BS))
		}
		w.jobs = append(w.jobs, j)
	}
	return w, nil
}

// Run performs n reads, spread evenly over the jobs, and returns what
// happened. A read that fails or comes back short stops the run, and Run
// returns an error wrapping ErrShortRead along with the figures so far. A
// negative n is refused with an error, and nothing is read.
func (w *Workload) Run(n int64) (Result, error) {
	if err := cmp.Or(w.open(), checkCount(n)); err != nil {
		return Result{}, err
	}
	w.begin()
	return w.run(func(i int) int64 { return share(n, len(w.jobs), i) })
}

// RunFor keeps every job's depth for d, then waits for the reads in flight,
// and returns what happened; errors as Run.
func (w *Workload) RunFor(d time.Duration) (Result, error) {
	if err := w.open(); err != nil {
		return Result{}, err
	}
	w.begin()
	defer w.stopAfter(d).Stop()
	return w.run(func(int) int64 { return -1 })
}

func (w *Workload) run(quota func(job int) int64) (Result, error) {
	var r Result
	before := w.snapshot()
	r.Elapsed, r.CPU = timed(len(w.jobs), func(i int) { w.jobs[i].run(quota(i)) })
	r.add(w.snapshot(), before)
	var errs []error
	for _, j := range w.jobs {
		r.Latency.Merge(&j.lat)
		j.lat = Histogram{}
		r.IOs += j.ios
		j.ios = 0
		errs = append(errs, j.err)
	}
	return r, errors.Join(errs...)
}

// now returns the time since the workload's epoch in nanoseconds.
func (w *Workload) now() int64 { return int64(time.Since(w.epoch)) }

// Close stops the executor and closes the notifiers. The file stays open.
// Run and RunFor return ErrClosed after it; a second Close does nothing.
func (w *Workload) Close() {
	if w.closed {
		return
	}
	w.closed = true
	if w.eng != nil {
		w.eng.close()
	}
	for _, j := range w.jobs {
		j.irq.Close()
	}
}
