package main

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"time"

	"github.com/batchio/threadpool/internal/randread"
)

// warmup bounds the unmeasured run that precedes each subject's rounds.
const warmup = 200 * time.Millisecond

// subject is one row of a table section: a design running the reads in a
// mode, or the ceiling.
type subject struct {
	ceiling bool
	design  randread.Design // unless ceiling
	mode    randread.Mode   // unless ceiling
}

// String names the subject as the progress line shows it: "pool/defer",
// "goroutine/each", "ceiling".
func (s subject) String() string {
	if s.ceiling {
		return ceilingName
	}
	return s.design.String() + "/" + s.mode.String()
}

// subjects lists what every shape measures: each design in every mode, then
// the ceiling.
func (o *options) subjects() []subject {
	var out []subject
	for _, d := range o.designs {
		for _, m := range o.modes {
			out = append(out, subject{design: d, mode: m})
		}
	}
	if o.ceiling {
		out = append(out, subject{ceiling: true})
	}
	return out
}

// newRunner makes what measures s on one shape.
func (s subject) newRunner(o *options, data *dataFile, sh shape) (randread.Runner, error) {
	if s.ceiling {
		return randread.NewCeiling(randread.CeilingConfig{File: data.f, Size: o.size, BS: o.bs})
	}
	return randread.New(randread.Config{
		File: data.f, Size: o.size, BS: o.bs,
		IODepth: sh.iodepth, NumJobs: sh.numjobs, Mode: s.mode, Design: s.design,
	})
}

// subjectResult is everything measured for one subject of one shape.
type subjectResult struct {
	subject subject
	total   randread.Result // merged over the rounds
	iops    []float64       // per round
	allocs  uint64          // heap allocations during the measured runs
}

// medianIOPS is the median of the rounds' IOPS, the figure the table quotes:
// it shrugs off a round slowed by other work on the machine.
func (m *subjectResult) medianIOPS() float64 {
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
func (m *subjectResult) allocsPerIO() float64 {
	if m.total.IOs == 0 {
		return 0
	}
	return float64(m.allocs) / float64(m.total.IOs)
}

// shapeResult is one table section.
type shapeResult struct {
	shape    shape
	subjects []*subjectResult
}

// compare runs every shape and writes the report.
func compare(o *options, stdout, stderr io.Writer) error {
	m := o.machine() // before the run, so that the load is other work's
	data, err := o.open(o)
	if err != nil {
		return err
	}
	defer data.cleanup()
	var results []*shapeResult
	prog := newProgress(stderr, o.progress.show(stderr, o.isTerminal))
	for _, sh := range o.shapes {
		r, err := compareShape(o, data, sh, prog)
		prog.clear()
		if err != nil {
			return fmt.Errorf("iodepth=%d numjobs=%d: %w", sh.iodepth, sh.numjobs, err)
		}
		results = append(results, r)
	}
	if o.json {
		return writeJSON(stdout, o, m, results)
	}
	return writeTable(stdout, o, m, results)
}

// compareShape runs the subjects of one shape alternately: every round runs
// each subject once, starting one subject further along than the last round.
func compareShape(o *options, data *dataFile, sh shape, prog *progress) (*shapeResult, error) {
	res := &shapeResult{shape: sh}
	subjects := o.subjects()
	runners := make([]randread.Runner, 0, len(subjects))
	defer func() {
		for _, r := range runners {
			r.Close()
		}
	}()
	for _, s := range subjects {
		r, err := s.newRunner(o, data, sh)
		if err != nil {
			return nil, fmt.Errorf("%v: %w", s, err)
		}
		runners = append(runners, r)
		res.subjects = append(res.subjects, &subjectResult{subject: s})
	}
	per := o.runtime / time.Duration(o.rounds)
	for i, r := range runners {
		// Warm up: start the workers and fill the pool's recycled lists, so
		// that the rounds measure the steady state.
		if _, err := r.RunFor(min(per/2, warmup)); err != nil {
			return nil, fmt.Errorf("%v, warming up: %w", subjects[i], err)
		}
	}
	for round := range o.rounds {
		for k := range subjects {
			i := (round + k) % len(subjects)
			sr := res.subjects[i]
			prog.start(fmt.Sprintf("iodepth=%d numjobs=%d round %d/%d %-18v",
				sh.iodepth, sh.numjobs, round+1, o.rounds, sr.subject), runners[i])
			r, allocs, err := measure(runners[i], per)
			prog.stop()
			if err != nil {
				return nil, fmt.Errorf("%v, round %d: %w", sr.subject, round+1, err)
			}
			sr.total.Merge(&r)
			sr.iops = append(sr.iops, r.IOPS())
			sr.allocs += allocs
		}
	}
	return res, nil
}

// measure runs r for d and counts the heap allocations of the whole process
// meanwhile (the progress line allocates nothing). The run itself reads the
// process's CPU time at its start and end, inside these counts.
func measure(r randread.Runner, d time.Duration) (randread.Result, uint64, error) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res, err := r.RunFor(d)
	runtime.ReadMemStats(&after)
	return res, after.Mallocs - before.Mallocs, err
}
