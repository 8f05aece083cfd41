// Command tpbench compares batched and per-completion notifications on a
// fio-like 4 KiB random-read workload run by the threadpool, and measures
// how close that comes to the machine's pread ceiling.
//
// numjobs jobs each keep iodepth preads in flight at random block-aligned
// offsets of a data file that is in the page cache, and are told about their
// completions through their own eventfd, in one of three modes: each (one
// write per completion), defer (one write per job per batch, through
// DeferCall) and coalesce (defer plus the notifier's pending-signal
// coalescing). -design picks what runs the reads: the pool, a goroutine per
// request, a channel-fed set of workers, and the ceiling (one goroutine per
// GOMAXPROCS, each locked to its thread, doing the same preads back to back
// with no pool and no completion delivery). Every design but the ceiling
// runs every mode, the ceiling once; the subjects run alternately, round
// after round, and a table compares them: IOPS and its ratios to the same
// design's each and to the ceiling, completion latency, eventfd writes per
// I/O, completions per batch, completion-loop wake-ups per I/O, CPU time per
// I/O, cores used and allocations per I/O. A header names the command, the
// machine, its load average and the date.
//
// With no flags it compares the pool in the three modes and the ceiling at
// iodepth=64 numjobs=8 and iodepth=1 numjobs=1 on a 256 MiB temporary file,
// in about 35 seconds. The progress line appears only when stderr is a
// terminal, unless -progress says otherwise. Any failed or short read ends
// the run with exit status 1.
//
// Usage:
//
//	tpbench [-filename path] [-size 256M] [-bs 4096] [-iodepth 64,1]
//	        [-numjobs 8,1] [-runtime 4s] [-rounds 4] [-mode all]
//	        [-design pool,ceiling] [-json] [-progress[=false]]
package main

import (
	"fmt"
	"io"
	"os"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run parses args, runs the comparison and writes its report to stdout, and
// returns the exit status: 2 for bad flags, 1 for a failed run, 0 otherwise,
// -h (the usage printed on stderr, nothing run) included.
func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err == errHelp {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "tpbench: %v\n", err)
		return 2
	}
	if err := compare(o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "\ntpbench: FAILED: %v\n", err)
		return 1
	}
	return 0
}
