package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/batchio/threadpool/internal/randread"
)

// row is one subject's figures, as printed and as JSON.
type row struct {
	IODepth        int     `json:"iodepth"`
	NumJobs        int     `json:"numjobs"`
	Design         string  `json:"design"`          // pool, goroutine, chanpool or ceiling
	Mode           string  `json:"mode,omitempty"`  // "" for the ceiling
	IOPS           float64 `json:"iops"`            // median of the rounds
	VsEach         float64 `json:"iops_vs_each"`    // IOPS / the same design's each; 0 without it
	VsCeiling      float64 `json:"iops_vs_ceiling"` // IOPS / the ceiling's; 0 without it
	P50Micros      float64 `json:"lat_p50_us"`      // submit to the job seeing it
	P99Micros      float64 `json:"lat_p99_us"`      //
	WritesPerIO    float64 `json:"irq_writes_per_io"`
	PerDrain       float64 `json:"ios_per_drain"`
	LoopWakesPerIO float64 `json:"loop_wakes_per_io"` // the pool only; 0 for the others
	CPUNanosPerIO  float64 `json:"cpu_ns_per_io"`     // the process's user+system CPU time per read
	Cores          float64 `json:"cores"`             // that CPU time over the wall time
	AllocsPerIO    float64 `json:"allocs_per_io"`
	IOs            uint64  `json:"ios"`
	Seconds        float64 `json:"seconds"`
	CPUSeconds     float64 `json:"cpu_seconds"`
}

// report is the JSON document.
type report struct {
	Command string  `json:"command"`
	Machine machine `json:"machine"`
	Size    int64   `json:"size"`
	BS      int     `json:"bs"`
	Rounds  int     `json:"rounds"`
	Runtime string  `json:"runtime_per_subject"`
	Rows    []row   `json:"results"`
}

// baselines returns the median IOPS of each design's each and of the
// ceiling in one section (0 where not measured).
func baselines(s *shapeResult) (each map[randread.Design]float64, ceiling float64) {
	each = map[randread.Design]float64{}
	for _, m := range s.subjects {
		switch {
		case m.subject.ceiling:
			ceiling = m.medianIOPS()
		case m.subject.mode == randread.Each:
			each[m.subject.design] = m.medianIOPS()
		}
	}
	return each, ceiling
}

func rows(results []*shapeResult) []row {
	var out []row
	for _, s := range results {
		each, ceiling := baselines(s)
		for _, m := range s.subjects {
			t := &m.total
			r := row{
				IODepth:       s.shape.iodepth,
				NumJobs:       s.shape.numjobs,
				Design:        ceilingName,
				IOPS:          m.medianIOPS(),
				CPUNanosPerIO: float64(t.CPUPerIO()),
				Cores:         t.Cores(),
				AllocsPerIO:   m.allocsPerIO(),
				IOs:           t.IOs,
				Seconds:       t.Elapsed.Seconds(),
				CPUSeconds:    t.CPU.Seconds(),
			}
			if ceiling > 0 {
				r.VsCeiling = r.IOPS / ceiling
			}
			if !m.subject.ceiling {
				r.Design = m.subject.design.String()
				r.Mode = m.subject.mode.String()
				if base := each[m.subject.design]; base > 0 {
					r.VsEach = r.IOPS / base
				}
				r.P50Micros = micros(t.Latency.Quantile(0.50))
				r.P99Micros = micros(t.Latency.Quantile(0.99))
				r.WritesPerIO = t.WritesPerIO()
				r.PerDrain = t.PerDrain()
				if m.subject.design == randread.Pool {
					r.LoopWakesPerIO = t.WakesPerIO()
				}
			}
			out = append(out, r)
		}
	}
	return out
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// command is the command line as the header shows it.
func command(o *options) string {
	return strings.Join(append([]string{"tpbench"}, o.args...), " ")
}

func writeJSON(w io.Writer, o *options, m machine, results []*shapeResult) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(report{
		Command: command(o),
		Machine: m,
		Size:    o.size,
		BS:      o.bs,
		Rounds:  o.rounds,
		Runtime: o.runtime.String(),
		Rows:    rows(results),
	})
}

// writeHeader names the command, the machine, its load and the date, so that
// a pasted table describes itself.
func writeHeader(w io.Writer, o *options, m machine) {
	fmt.Fprintf(w, "%s\n", command(o))
	fmt.Fprintf(w, "machine: %s, %d CPUs, GOMAXPROCS %d, %s, %s\n",
		orUnknown(m.CPUModel), m.CPUs, m.GOMAXPROCS, orUnknown(m.Kernel), m.GoVersion)
	fmt.Fprintf(w, "load average before the run: %s; started %s\n", orUnknown(m.LoadAvg), m.Date)
	fmt.Fprintf(w, "randread bs=%d size=%s, %d rounds, %v per subject\n", o.bs, formatSize(o.size), o.rounds, o.runtime)
}

// formatSize writes a byte count as -size reads it: with the largest of the
// G, M and K suffixes that divides it exactly.
func formatSize(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if n%u.mult == 0 {
			return fmt.Sprintf("%d%s", n/u.mult, u.suffix)
		}
	}
	return fmt.Sprint(n)
}

// ratioCell prints a ratio, or "-" when there was nothing to divide by.
func ratioCell(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3fx", v)
}

// stickyWriter passes writes on until one fails, and keeps that error.
type stickyWriter struct {
	w   io.Writer
	err error
}

func (s *stickyWriter) Write(b []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.w.Write(b)
	s.err = err
	return n, err
}

// writeTable writes the header and the table, and returns the first error
// of its writes.
func writeTable(out io.Writer, o *options, m machine, results []*shapeResult) error {
	w := &stickyWriter{w: out}
	writeHeader(w, o, m)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "iodepth\tnumjobs\tdesign\tmode\tIOPS\tvs each\tvs ceiling\tp50 us\tp99 us\tirq writes/IO\tIOs/drain\tloop wakes/IO\tCPU ns/IO\tcores\tallocs/IO\t")
	for _, r := range rows(results) {
		mode, notify := "-", "-\t-\t-\t-\t-"
		if r.Mode != "" {
			mode = r.Mode
			wakes := "-" // only the pool counts its loop's wake-ups
			if r.Design == randread.Pool.String() {
				wakes = fmt.Sprintf("%.4f", r.LoopWakesPerIO)
			}
			notify = fmt.Sprintf("%.1f\t%.1f\t%.4f\t%.1f\t%s",
				r.P50Micros, r.P99Micros, r.WritesPerIO, r.PerDrain, wakes)
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%.0f\t%s\t%s\t%s\t%.0f\t%.2f\t%.4f\t\n",
			r.IODepth, r.NumJobs, r.Design, mode, r.IOPS, ratioCell(r.VsEach), ratioCell(r.VsCeiling),
			notify, r.CPUNanosPerIO, r.Cores, r.AllocsPerIO)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nIOPS is the median over the rounds; the other figures cover every round.")
	fmt.Fprintln(w, "CPU ns/IO and cores count the whole process (getrusage) over the measured runs.")
	return w.err
}
