package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/batchio/threadpool/internal/randread"
)

// row is one mode's figures, as printed and as JSON.
type row struct {
	IODepth        int     `json:"iodepth"`
	NumJobs        int     `json:"numjobs"`
	Mode           string  `json:"mode"`
	IOPS           float64 `json:"iops"`         // median of the rounds
	VsEach         float64 `json:"iops_vs_each"` // IOPS / each's IOPS; 0 without each
	P50Micros      float64 `json:"lat_p50_us"`   // submit to the job seeing it
	P99Micros      float64 `json:"lat_p99_us"`   //
	WritesPerIO    float64 `json:"irq_writes_per_io"`
	PerDrain       float64 `json:"ios_per_drain"`
	LoopWakesPerIO float64 `json:"loop_wakes_per_io"`
	AllocsPerIO    float64 `json:"allocs_per_io"`
	IOs            uint64  `json:"ios"`
	Seconds        float64 `json:"seconds"`
}

// report is the JSON document.
type report struct {
	GoVersion string `json:"go_version"`
	CPUs      int    `json:"cpus"`
	Size      int64  `json:"size"`
	BS        int    `json:"bs"`
	Rounds    int    `json:"rounds"`
	Runtime   string `json:"runtime_per_mode"`
	Rows      []row  `json:"results"`
}

func rows(results []*shapeResult) []row {
	var out []row
	for _, s := range results {
		var each float64
		for _, m := range s.modes {
			if m.mode == randread.Each {
				each = m.medianIOPS()
			}
		}
		for _, m := range s.modes {
			t := &m.total
			r := row{
				IODepth:        s.shape.iodepth,
				NumJobs:        s.shape.numjobs,
				Mode:           m.mode.String(),
				IOPS:           m.medianIOPS(),
				P50Micros:      micros(t.Latency.Quantile(0.50)),
				P99Micros:      micros(t.Latency.Quantile(0.99)),
				WritesPerIO:    t.WritesPerIO(),
				PerDrain:       t.PerDrain(),
				LoopWakesPerIO: t.WakesPerIO(),
				AllocsPerIO:    m.allocsPerIO(),
				IOs:            t.IOs,
				Seconds:        t.Elapsed.Seconds(),
			}
			if each > 0 {
				r.VsEach = r.IOPS / each
			}
			out = append(out, r)
		}
	}
	return out
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func writeJSON(w io.Writer, o *options, results []*shapeResult) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(report{
		GoVersion: runtime.Version(),
		CPUs:      runtime.NumCPU(),
		Size:      o.size,
		BS:        o.bs,
		Rounds:    o.rounds,
		Runtime:   o.runtime.String(),
		Rows:      rows(results),
	})
}

func writeTable(w io.Writer, o *options, results []*shapeResult) {
	fmt.Fprintf(w, "randread bs=%d size=%d, %d rounds, %v per mode, %s, %d CPUs\n\n",
		o.bs, o.size, o.rounds, o.runtime, runtime.Version(), runtime.NumCPU())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "iodepth\tnumjobs\tmode\tIOPS\tvs each\tp50 us\tp99 us\tirq writes/IO\tIOs/drain\tloop wakes/IO\tallocs/IO\t")
	for _, r := range rows(results) {
		vs := "-"
		if r.VsEach > 0 {
			vs = fmt.Sprintf("%.3fx", r.VsEach)
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%.0f\t%s\t%.1f\t%.1f\t%.4f\t%.1f\t%.4f\t%.4f\t\n",
			r.IODepth, r.NumJobs, r.Mode, r.IOPS, vs, r.P50Micros, r.P99Micros,
			r.WritesPerIO, r.PerDrain, r.LoopWakesPerIO, r.AllocsPerIO)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nIOPS is the median over the rounds; the other figures cover every round.")
}
