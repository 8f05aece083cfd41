package main

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"time"

	"github.com/batchio/threadpool/internal/randread"
)

// warmup bounds the unmeasured run that precedes each mode's rounds.
const warmup = 200 * time.Millisecond

// modeResult is everything measured for one mode of one shape.
type modeResult struct {
	mode   randread.Mode
	total  randread.Result // merged over the rounds
	iops   []float64       // per round
	allocs uint64          // heap allocations during the measured runs
}

// medianIOPS is the median of the rounds' IOPS, the figure the table quotes:
// it shrugs off a round slowed by other work on the machine.
func (m *modeResult) medianIOPS() float64 {
	s := slices.Clone(m.iops)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// allocsPerIO is the heap allocations per read over the measured runs.
func (m *modeResult) allocsPerIO() float64 {
	if m.total.IOs == 0 {
		return 0
	}
	return float64(m.allocs) / float64(m.total.IOs)
}

// shapeResult is one table section.
type shapeResult struct {
	shape shape
	modes []*modeResult
}

// compare runs every shape and writes the report.
func compare(o *options, stdout, stderr io.Writer) error {
	data, err := o.open(o)
	if err != nil {
		return err
	}
	defer data.cleanup()
	var results []*shapeResult
	prog := newProgress(stderr, o.progress)
	for _, sh := range o.shapes {
		r, err := compareShape(o, data, sh, prog)
		prog.clear()
		if err != nil {
			return fmt.Errorf("iodepth=%d numjobs=%d: %w", sh.iodepth, sh.numjobs, err)
		}
		results = append(results, r)
	}
	if o.json {
		return writeJSON(stdout, o, results)
	}
	writeTable(stdout, o, results)
	return nil
}

// compareShape runs the modes of one shape alternately: every round runs
// each mode once, starting one mode further along than the last round.
func compareShape(o *options, data *dataFile, sh shape, prog *progress) (*shapeResult, error) {
	res := &shapeResult{shape: sh}
	loads := make([]*randread.Workload, len(o.modes))
	defer func() {
		for _, w := range loads {
			if w != nil {
				w.Close()
			}
		}
	}()
	for i, m := range o.modes {
		w, err := randread.New(randread.Config{
			File: data.f, Size: o.size, BS: o.bs,
			IODepth: sh.iodepth, NumJobs: sh.numjobs, Mode: m,
		})
		if err != nil {
			return nil, err
		}
		loads[i] = w
		res.modes = append(res.modes, &modeResult{mode: m})
	}
	per := o.runtime / time.Duration(o.rounds)
	for _, w := range loads {
		// Warm up: start the workers and fill the pool's recycled lists, so
		// that the rounds measure the steady state.
		if _, err := w.RunFor(min(per/2, warmup)); err != nil {
			return nil, err
		}
	}
	for round := range o.rounds {
		for k := range o.modes {
			i := (round + k) % len(o.modes)
			mr := res.modes[i]
			prog.start(fmt.Sprintf("iodepth=%d numjobs=%d round %d/%d mode=%-8v",
				sh.iodepth, sh.numjobs, round+1, o.rounds, mr.mode), loads[i])
			r, allocs, err := measure(loads[i], per)
			prog.stop()
			if err != nil {
				return nil, err
			}
			mr.total.Merge(&r)
			mr.iops = append(mr.iops, r.IOPS())
			mr.allocs += allocs
		}
	}
	return res, nil
}

// measure runs w for d and counts the heap allocations of the whole process
// meanwhile (the progress line allocates nothing).
func measure(w *randread.Workload, d time.Duration) (randread.Result, uint64, error) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	r, err := w.RunFor(d)
	runtime.ReadMemStats(&after)
	return r, after.Mallocs - before.Mallocs, err
}
