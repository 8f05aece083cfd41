package randread

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCeilingReadsFullBlocks(t *testing.T) {
	f := dataFile(t, 256<<10)
	c, err := NewCeiling(CeilingConfig{File: f, Size: 256 << 10, BS: 4096})
	require.NoError(t, err)
	defer c.Close()
	require.Equal(t, runtime.GOMAXPROCS(0), c.Threads(), "one thread per P by default")
	for range 2 { // a Ceiling runs again and again
		r, err := c.Run(1001)
		require.NoError(t, err)
		require.Equal(t, uint64(1001), r.IOs)
		require.Positive(t, r.IOPS())
		require.Positive(t, r.Elapsed)
		require.Zero(t, r.Latency.Count(), "the ceiling measures no latency")
		require.Zero(t, r.IRQWrites+r.Drains+r.Delivered+r.LoopWakes+r.SpinHits, "nor notifications")
	}
	require.Equal(t, uint64(2002), c.Progress())
}

func TestCeilingRunForStops(t *testing.T) {
	f := dataFile(t, 64<<10)
	c, err := NewCeiling(CeilingConfig{File: f, Size: 64 << 10, BS: 4096, Threads: 3})
	require.NoError(t, err)
	require.Equal(t, 3, c.Threads())
	r, err := c.RunFor(20 * time.Millisecond)
	require.NoError(t, err)
	require.Positive(t, r.IOs)
	require.Equal(t, r.IOs, c.Progress())
}

func TestCeilingShortReadFailsTheRun(t *testing.T) {
	f := dataFile(t, 8<<10)
	// Size claims more than the file holds: reads past 8 KiB come back short.
	c, err := NewCeiling(CeilingConfig{File: f, Size: 1 << 20, BS: 4096, Threads: 2})
	require.NoError(t, err)
	r, err := c.Run(100000)
	require.ErrorIs(t, err, ErrShortRead)
	require.Less(t, r.IOs, uint64(100000), "a failed read stops every thread")

	_, err = c.RunFor(time.Minute)
	require.ErrorIs(t, err, ErrShortRead, "a timed run fails too, long before its end")
}

func TestCeilingFailedReadOfAClosedFile(t *testing.T) {
	f := dataFile(t, 64<<10)
	c, err := NewCeiling(CeilingConfig{File: f, Size: 64 << 10, BS: 4096, Threads: 2})
	require.NoError(t, err)
	require.NoError(t, f.Close())
	r, err := c.Run(10)
	require.ErrorIs(t, err, ErrShortRead)
	require.Zero(t, r.IOs)
}

func TestCeilingConfigRejected(t *testing.T) {
	f := dataFile(t, 8<<10)
	good := CeilingConfig{File: f, Size: 8 << 10, BS: 4096}
	for name, mut := range map[string]func(*CeilingConfig){
		"no file":          func(c *CeilingConfig) { c.File = nil },
		"zero bs":          func(c *CeilingConfig) { c.BS = 0 },
		"small size":       func(c *CeilingConfig) { c.Size = 100 },
		"negative threads": func(c *CeilingConfig) { c.Threads = -1 },
	} {
		c := good
		mut(&c)
		_, err := NewCeiling(c)
		require.Error(t, err, name)
	}
}

// Every thread of a Ceiling is locked to its own OS thread, and the runtime
// ends the process beyond 10000 of them: NewCeiling refuses more than
// MaxThreads threads, given or taken from GOMAXPROCS, with an error naming
// the count and the bound. Only the buffer budget bounded them, which at
// bs 512 let two million threads through.
func TestCeilingRejectsThreadsAboveTheBound(t *testing.T) {
	f := dataFile(t, 8<<10)
	c, err := NewCeiling(CeilingConfig{File: f, Size: 8 << 10, BS: 512, Threads: MaxThreads})
	require.NoError(t, err, "MaxThreads is allowed")
	require.Equal(t, MaxThreads, c.Threads())
	for _, n := range []int{MaxThreads + 1, MaxBuffers / 512} {
		c, err := NewCeiling(CeilingConfig{File: f, Size: 8 << 10, BS: 512, Threads: n})
		require.ErrorContains(t, err, fmt.Sprintf("threads %d above the bound of %d", n, MaxThreads))
		require.Nil(t, c)
	}

	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(MaxThreads + 1))
	c, err = NewCeiling(CeilingConfig{File: f, Size: 8 << 10, BS: 512})
	require.ErrorContains(t, err, fmt.Sprintf("threads %d (GOMAXPROCS) above the bound of %d", MaxThreads+1, MaxThreads))
	require.Nil(t, c)
}

// TestTimedReadsTheCPUClockAtTheEdgesOnly checks that the process's CPU time
// is read once before the first goroutine starts and once after the last
// one ends, and that the difference is what the run reports.
func TestTimedReadsTheCPUClockAtTheEdgesOnly(t *testing.T) {
	var reads, running atomic.Int64
	var readWhileRunning atomic.Bool
	saved := cpuClock
	defer func() { cpuClock = saved }()
	cpuClock = func() time.Duration {
		if running.Load() != 0 {
			readWhileRunning.Store(true)
		}
		return time.Duration(reads.Add(1)) * time.Second
	}
	var ran atomic.Int64
	_, cpu := timed(4, func(int) {
		running.Add(1)
		ran.Add(1)
		running.Add(-1)
	})
	require.Equal(t, int64(4), ran.Load())
	require.Equal(t, int64(2), reads.Load())
	require.False(t, readWhileRunning.Load())
	require.Equal(t, time.Second, cpu, "the second reading minus the first")
}

func TestRunsReportTheirCPU(t *testing.T) {
	f := dataFile(t, 256<<10)
	c, err := NewCeiling(CeilingConfig{File: f, Size: 256 << 10, BS: 4096})
	require.NoError(t, err)
	w, err := New(Config{File: f, Size: 256 << 10, BS: 4096, IODepth: 4, NumJobs: 2, Mode: Defer})
	require.NoError(t, err)
	defer w.Close()
	for _, s := range []Runner{c, w} {
		r, err := s.Run(20000)
		require.NoError(t, err)
		require.Positive(t, r.CPU, "reads cost CPU time")
		// The process cannot use more than every core for the whole run
		// (plus the clock's microsecond granularity).
		limit := time.Duration(runtime.NumCPU())*r.Elapsed + 2*time.Millisecond
		require.LessOrEqual(t, r.CPU, limit)
		require.InDelta(t, float64(r.CPU)/float64(r.IOs), float64(r.CPUPerIO()), 1)
		require.InDelta(t, r.CPU.Seconds()/r.Elapsed.Seconds(), r.Cores(), 1e-9)
	}
}

func TestProcessCPUAdvances(t *testing.T) {
	start := ProcessCPU()
	require.Positive(t, start, "a running test has used CPU time")
	// Spin until the clock moves: CPU time spent on this goroutine must show.
	x := uint64(1)
	for ProcessCPU() < start+time.Millisecond {
		for i := range 10000 {
			x = x*6364136223846793005 + uint64(i)
		}
	}
	require.NotZero(t, x)
}

func TestResultCPUFigures(t *testing.T) {
	r := Result{IOs: 1000, Elapsed: time.Second, CPU: 1500 * time.Millisecond}
	require.Equal(t, 1500*time.Microsecond, r.CPUPerIO())
	require.InDelta(t, 1.5, r.Cores(), 1e-12)
	var sum Result
	sum.Merge(&r)
	sum.Merge(&r)
	require.Equal(t, 3*time.Second, sum.CPU)
	require.InDelta(t, 1.5, sum.Cores(), 1e-12)
	var empty Result
	require.Zero(t, empty.CPUPerIO())
	require.Zero(t, empty.Cores())
}
