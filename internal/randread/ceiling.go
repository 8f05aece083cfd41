package randread

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"time"
)

// progressBatch is how many reads a Ceiling thread or a Workload's job
// checks before it adds them to the shared progress counter, so that they do
// not contend on it.
const progressBatch = 64

// MaxThreads bounds CeilingConfig.Threads, given or taken from GOMAXPROCS:
// every thread is locked to its own OS thread, and the Go runtime ends the
// process once it has 10000 of them, so a count near that crashes the run
// rather than measuring anything. 1024 is one thread per CPU on the largest
// machines the comparison is meant for.
const MaxThreads = 1024

// CeilingConfig describes a Ceiling.
type CeilingConfig struct {
	// File is read; it must hold at least Size bytes. The caller keeps it open
	// until Close has returned.
	File *os.File
	// Size is the span of File the offsets are drawn from, as in Config.
	Size int64
	// BS is the size of every read, in bytes (4096 in the model).
	BS int
	// Threads is the number of reading threads; 0 means GOMAXPROCS, read
	// when NewCeiling is called. Either way it must not exceed MaxThreads.
	Threads int
}

// Ceiling is the machine's ceiling for the model's reads: Threads goroutines,
// each locked to its own OS thread, each doing BS-byte preads (File.ReadAt,
// as the other subjects do) at random block-aligned offsets of the same file
// back to back, with no pool, no hand-off and no completion delivery. Every
// read is checked as a Workload checks it: one that fails or returns less
// than BS bytes fails the run. Its Results carry IOs, Elapsed and CPU; the
// notification counters and the latency histogram stay empty. Run, RunFor and
// Close must not be called concurrently; Progress may be called at any time,
// and counts each thread's reads in batches of up to 64.
type Ceiling struct {
	file    *os.File
	blocks  int64
	readers []*ceilingReader

	runControl
}

// ceilingReader is one thread's buffer and the outcome of its last run.
type ceilingReader struct {
	buf []byte
	ios uint64     // written once at the end of a run
	err error      // the reader's first failed read of the run
	rng *rand.Rand // draws from pcg
	// pcg is the generator's state, written by every draw, padded so that no
	// two threads' generators share a cache line.
	_   [cacheLinePad]byte
	pcg rand.PCG
	_   [cacheLinePad]byte
}

var _ Runner = (*Ceiling)(nil)

// NewCeiling checks c and makes a Ceiling; it starts no goroutine until Run.
// More threads than MaxThreads, and buffers of Threads x BS bytes above
// MaxBuffers, are refused with an error.
func NewCeiling(c CeilingConfig) (*Ceiling, error) {
	if err := validateFile(c.File, c.Size, c.BS); err != nil {
		return nil, err
	}
	if c.Threads < 0 {
		return nil, fmt.Errorf("randread: threads %d must not be negative", c.Threads)
	}
	from := ""
	if c.Threads == 0 {
		c.Threads, from = runtime.GOMAXPROCS(0), " (GOMAXPROCS)"
	}
	if c.Threads > MaxThreads {
		return nil, fmt.Errorf("randread: threads %d%s above the bound of %d: each is an OS thread of its own", c.Threads, from, MaxThreads)
	}
	if err := CheckBuffers(c.Threads, c.BS); err != nil {
		return nil, fmt.Errorf("randread: %d threads at bs %d: %w", c.Threads, c.BS, err)
	}
	cl := &Ceiling{file: c.File, blocks: c.Size / int64(c.BS)}
	for range c.Threads {
		rd := &ceilingReader{buf: make([]byte, c.BS)}
		rd.rng = rand.New(&rd.pcg)
		cl.readers = append(cl.readers, rd)
	}
	return cl, nil
}

// Threads returns the number of reading threads.
func (c *Ceiling) Threads() int { return len(c.readers) }

// Run performs n reads, spread evenly over the threads, and returns what
// happened. A read that fails or comes back short stops the run, and Run
// returns an error wrapping ErrShortRead along with the figures so far. A
// negative n is refused with an error, and nothing is read.
func (c *Ceiling) Run(n int64) (Result, error) {
	if err := cmp.Or(c.open(), checkCount(n)); err != nil {
		return Result{}, err
	}
	c.begin()
	return c.run(func(i int) int64 { return share(n, len(c.readers), i) })
}

// RunFor reads on every thread for d and returns what happened; errors as
// Run.
func (c *Ceiling) RunFor(d time.Duration) (Result, error) {
	if err := c.open(); err != nil {
		return Result{}, err
	}
	c.begin()
	defer c.stopAfter(d).Stop()
	return c.run(func(int) int64 { return -1 })
}

func (c *Ceiling) run(quota func(thread int) int64) (Result, error) {
	var r Result
	r.Elapsed, r.CPU = timed(len(c.readers), func(i int) { c.read(c.readers[i], quota(i)) })
	errs := make([]error, 0, len(c.readers))
	for _, rd := range c.readers {
		r.IOs += rd.ios
		errs = append(errs, rd.err)
	}
	return r, errors.Join(errs...)
}

// read is one thread: it reads until it has done quota reads (quota < 0:
// until the run stops), a read fails, or another thread's read failed.
func (c *Ceiling) read(rd *ceilingReader, quota int64) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	rd.pcg.Seed(rand.Uint64(), rand.Uint64())
	rng := rd.rng
	buf, bs := rd.buf, int64(len(rd.buf))
	rd.err = nil
	var ios, unreported uint64
	for (quota < 0 || int64(ios) < quota) && !c.stopping() {
		off := rng.Int64N(c.blocks) * bs
		n, err := c.file.ReadAt(buf, off)
		if err := checkRead(off, n, len(buf), err); err != nil {
			rd.err = err
			c.halt()
			break
		}
		ios++
		if unreported++; unreported == progressBatch {
			c.progress.Add(unreported)
			unreported = 0
		}
	}
	c.progress.Add(unreported)
	rd.ios = ios
}

// Close releases nothing that the garbage collector would not: it exists so
// that a Ceiling is a Runner. The file stays open. Run and RunFor return
// ErrClosed after it.
func (c *Ceiling) Close() { c.closed = true }
