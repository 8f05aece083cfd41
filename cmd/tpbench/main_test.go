package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batchio/threadpool/internal/randread"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(ignoredSignalsHelperEnv); dir != "" {
		reportIgnoredSignals(dir) // the helper process of TestIgnoredSignalsStayIgnored
		return
	}
	goleak.VerifyTestMain(m)
}

func TestParseFlagsDefaults(t *testing.T) {
	o, err := parseFlags(nil, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, int64(256<<20), o.size)
	require.Equal(t, 4096, o.bs)
	require.Equal(t, []shape{{64, 8}, {1, 1}}, o.shapes)
	require.Equal(t, randread.Modes, o.modes)
	require.Equal(t, 4*time.Second, o.runtime)
	require.Equal(t, 4, o.rounds)
	require.Empty(t, o.filename)
	require.False(t, o.json)
	require.Equal(t, []randread.Design{randread.Pool}, o.designs)
	require.True(t, o.ceiling)
	require.False(t, o.progress.set, "the progress line is automatic by default")
	require.Len(t, o.subjects(), 4, "the pool in every mode, then the ceiling")
}

func TestParseFlagsValues(t *testing.T) {
	o, err := parseFlags([]string{
		"-filename", "/data/f", "-size", "1g", "-bs", "512", "-iodepth", "32, 4",
		"-numjobs", "2,3", "-runtime", "10s", "-rounds", "5", "-mode", "coalesce,each,coalesce", "-json",
	}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, "/data/f", o.filename)
	require.Equal(t, int64(1<<30), o.size)
	require.Equal(t, 512, o.bs)
	require.Equal(t, []shape{{32, 2}, {4, 3}}, o.shapes)
	require.Equal(t, []randread.Mode{randread.Coalesce, randread.Each}, o.modes)
	require.Equal(t, 10*time.Second, o.runtime)
	require.Equal(t, 5, o.rounds)
	require.True(t, o.json)
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "8k": 8 << 10, "64M": 64 << 20, "64MB": 64 << 20, "2G": 2 << 30} {
		got, err := parseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "0", "-1", "M", "12X", "1.5G", "9999999999G"} {
		_, err := parseSize(in)
		require.Error(t, err, in)
	}
}

func TestParseFlagsRejects(t *testing.T) {
	for name, args := range map[string][]string{
		"zero bs":           {"-bs", "0"},
		"size below bs":     {"-size", "100", "-bs", "4096"},
		"bad size":          {"-size", "lots"},
		"zero iodepth":      {"-iodepth", "0", "-numjobs", "1"},
		"bad numjobs":       {"-iodepth", "1", "-numjobs", "x"},
		"unpaired lists":    {"-iodepth", "64,1", "-numjobs", "8"},
		"depth overflow":    {"-iodepth", "4611686018427387904,1", "-numjobs", "2,1"}, // reads in flight overflow an int
		"unknown mode":      {"-mode", "sometimes"},
		"empty mode":        {"-mode", ""},
		"unknown design":    {"-design", "pool,fast"},
		"empty design":      {"-design", ""},
		"bad progress":      {"-progress=often"},
		"zero rounds":       {"-rounds", "0"},
		"runtime too short": {"-runtime", "1ms", "-rounds", "4"},
		"rounds overflow":   {"-rounds", "10000000000000"}, // rounds x 1ms overflows
		"unknown flag":      {"-direct"},
		"stray argument":    {"extra"},
	} {
		_, err := parseFlags(args, &bytes.Buffer{})
		require.Error(t, err, name)
	}
}

func TestRunBadFlagsExitsTwo(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.Equal(t, 2, run([]string{"-mode", "never"}, &stdout, &stderr))
	require.Contains(t, stderr.String(), "unknown mode")
	require.Empty(t, stdout.String())
}

// tinyArgs is a short end-to-end run on a small file in dir, its progress
// line left to decide for itself.
func tinyArgs(dir string) []string {
	return []string{
		"-filename", filepath.Join(dir, "data"), "-size", "1M", "-iodepth", "4,1", "-numjobs", "2,1",
		"-runtime", "60ms", "-rounds", "2",
	}
}

// tinyRun is tinyArgs without the progress line, then extra.
func tinyRun(dir string, extra ...string) []string {
	return append(append(tinyArgs(dir), "-progress=false"), extra...)
}

// tableRows returns the data rows of a table, split into their cells.
func tableRows(out string) [][]string {
	var rows [][]string
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) == 15 && f[0] != "iodepth" {
			rows = append(rows, f)
		}
	}
	return rows
}

func TestRunTable(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := tinyRun(t.TempDir())
	require.Equal(t, 0, run(args, &stdout, &stderr), stderr.String())
	require.Empty(t, stderr.String())
	out := stdout.String()
	require.True(t, strings.HasPrefix(out, "tpbench "+strings.Join(args, " ")+"\n"), "the header starts with the command")
	for _, want := range []string{"machine: ", "GOMAXPROCS", runtime.Version(), "load average", "size=1M",
		"iodepth", "design", "IOPS", "vs each", "vs ceiling", "irq writes/IO", "IOs/drain", "loop wakes/IO",
		"CPU ns/IO", "cores", "allocs/IO"} {
		require.Contains(t, out, want)
	}
	var subjects []string
	for _, f := range tableRows(out) {
		subjects = append(subjects, f[2]+"/"+f[3])
		if f[2] == "ceiling" {
			require.Equal(t, "-", f[3], "the ceiling has no mode")
			require.Equal(t, []string{"-", "1.000x", "-", "-", "-", "-", "-"}, f[5:12], "nor notifications")
		}
		cpu, err := strconv.ParseFloat(f[12], 64)
		require.NoError(t, err)
		require.Positive(t, cpu, "CPU ns/IO")
		cores, err := strconv.ParseFloat(f[13], 64)
		require.NoError(t, err)
		require.Positive(t, cores)
	}
	per := []string{"pool/each", "pool/defer", "pool/coalesce", "ceiling/-"}
	require.Equal(t, append(per, per...), subjects, out)
}

func TestRunEveryDesign(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := append(tinyRun(t.TempDir()), "-iodepth", "4", "-numjobs", "2", "-design", "all", "-mode", "each,defer")
	require.Equal(t, 0, run(args, &stdout, &stderr), stderr.String())
	var subjects []string
	for _, f := range tableRows(stdout.String()) {
		subjects = append(subjects, f[2]+"/"+f[3])
		if f[2] != "pool" {
			require.Equal(t, "-", f[11], "only the pool counts its loop's wake-ups")
		}
	}
	require.Equal(t, []string{"pool/each", "pool/defer", "goroutine/each", "goroutine/defer",
		"chanpool/each", "chanpool/defer", "ceiling/-"}, subjects)
}

func TestRunJSON(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run(tinyRun(dir, "-json", "-mode", "each,defer"), &stdout, &stderr), stderr.String())
	var rep report
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &rep))
	require.Len(t, rep.Rows, 6)
	for _, r := range rep.Rows {
		require.Positive(t, r.IOs)
		require.Positive(t, r.IOPS)
		require.Positive(t, r.VsCeiling)
		require.Positive(t, r.CPUNanosPerIO)
		require.Positive(t, r.Cores)
		require.InDelta(t, r.CPUSeconds*1e9/float64(r.IOs), r.CPUNanosPerIO, 1, "CPU time per read")
		require.InDelta(t, r.CPUSeconds/r.Seconds, r.Cores, 1e-9, "CPU time over wall time")
		if r.Design == "ceiling" {
			require.Empty(t, r.Mode)
			require.Zero(t, r.VsEach)
			require.Equal(t, 1.0, r.VsCeiling)
		} else {
			require.Positive(t, r.VsEach)
		}
	}
	require.Equal(t, []string{"pool", "pool", "ceiling"}, []string{rep.Rows[0].Design, rep.Rows[1].Design, rep.Rows[2].Design})
	require.Equal(t, 1.0, rep.Rows[0].VsEach, "each is its own baseline")
	require.Equal(t, runtime.GOMAXPROCS(0), rep.Machine.GOMAXPROCS)
	require.Contains(t, rep.Command, "-json")
	// The keys README.md lists for -json.
	var top map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &top))
	require.ElementsMatch(t, []string{"command", "machine", "size", "bs", "rounds", "runtime_per_subject", "results"},
		slices.Collect(maps.Keys(top)))
	var raw struct {
		Machine map[string]any   `json:"machine"`
		Results []map[string]any `json:"results"`
	}
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &raw))
	require.ElementsMatch(t, []string{"cpu_model", "cpus", "gomaxprocs", "kernel", "go_version", "loadavg", "date"},
		slices.Collect(maps.Keys(raw.Machine)))
	rowKeys := []string{"iodepth", "numjobs", "design", "mode", "iops", "iops_vs_each", "iops_vs_ceiling",
		"lat_p50_us", "lat_p99_us", "irq_writes_per_io", "ios_per_drain", "loop_wakes_per_io", "cpu_ns_per_io",
		"cores", "allocs_per_io", "ios", "seconds", "cpu_seconds"}
	require.ElementsMatch(t, rowKeys, slices.Collect(maps.Keys(raw.Results[0])))
	require.ElementsMatch(t, slices.DeleteFunc(rowKeys, func(k string) bool { return k == "mode" }),
		slices.Collect(maps.Keys(raw.Results[2])), "the ceiling has no mode")
	st, err := os.Stat(filepath.Join(dir, "data"))
	require.NoError(t, err, "a -filename file is kept")
	require.Equal(t, int64(1<<20), st.Size())
}

func TestRunShowsProgress(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := append(tinyRun(t.TempDir()), "-progress=true", "-mode", "each")
	require.Equal(t, 0, run(args, &stdout, &stderr), stderr.String())
	require.Contains(t, stderr.String(), "\riodepth=4 numjobs=2 round 1/2 pool/each")
}

// TestRunFailsOnShortRead makes every read past the first 8 KiB come back
// short: the run must fail, not report impossible IOPS, whatever the
// subject, and its error names the shape and the subject that failed. On a
// loaded machine a subject's timer may end a short phase before its jobs
// issue a read (a warm-up, even a round, with no reads and no error), so the
// failing subject may be a later mode, and the phase a later round.
func TestRunFailsOnShortRead(t *testing.T) {
	for _, design := range []string{"pool", "goroutine", "chanpool", "ceiling"} {
		o, err := parseFlags(append(tinyRun(t.TempDir()), "-design", design), &bytes.Buffer{})
		require.NoError(t, err)
		short := filepath.Join(t.TempDir(), "short")
		require.NoError(t, os.WriteFile(short, make([]byte, 8<<10), 0o644))
		o.open = func(*options) (*dataFile, error) {
			f, err := os.Open(short)
			if err != nil {
				return nil, err
			}
			return &dataFile{f: f, cleanup: func() { f.Close() }}, nil
		}
		var stdout, stderr bytes.Buffer
		err = compare(o, &stdout, &stderr)
		require.ErrorIs(t, err, randread.ErrShortRead, design)
		require.Regexp(t, `^iodepth=4 numjobs=2: `+design+`(/[a-z]+)?, (warming up|round [12]): `, err.Error())
		require.Empty(t, stdout.String(), "no table for a failed run")
	}
}

func TestRunFailureExitsOne(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	args := tinyRun(dir)
	require.NoError(t, os.Mkdir(filepath.Join(dir, "data"), 0o755)) // not a regular file
	require.Equal(t, 1, run(args, &stdout, &stderr))
	require.Contains(t, stderr.String(), "FAILED")
}

// -h is no bad flag: it prints the usage and exits 0, as the flag package's
// own programs do, without running anything.
func TestRunHelpExitsZero(t *testing.T) {
	for _, h := range []string{"-h", "-help", "--help"} {
		var stdout, stderr bytes.Buffer
		require.Equal(t, 0, run([]string{h}, &stdout, &stderr), h)
		require.Contains(t, stderr.String(), "Usage of tpbench", h)
		require.Contains(t, stderr.String(), "-iodepth", h)
		require.NotContains(t, stderr.String(), "tpbench: ", h)
		require.Empty(t, stdout.String(), h)
	}
}

// requireRefusedBeforeData runs tpbench with args, a data file in a
// temporary directory and no progress line, and requires that it exit 2,
// print nothing on stdout, say each of wants on stderr and not make the
// data file.
func requireRefusedBeforeData(t *testing.T, args []string, wants ...string) {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	var stdout, stderr bytes.Buffer
	args = append([]string{"-filename", data, "-progress=false"}, args...)
	require.Equal(t, 2, run(args, &stdout, &stderr), stderr.String())
	for _, want := range wants {
		require.Contains(t, stderr.String(), want)
	}
	require.Empty(t, stdout.String())
	require.NoFileExists(t, data)
}

// Flags whose read buffers exceed randread.MaxBuffers are bad flags: the
// command exits 2 with a message stating the bound and the product, before
// it makes the data file, rather than allocate until memory runs out.
func TestRunBuffersAboveTheBoundExitsTwo(t *testing.T) {
	requireRefusedBeforeData(t, []string{"-size", "8k", "-bs", "4096", "-iodepth", "64,262145", "-numjobs", "8,1", "-design", "pool"},
		"-iodepth 262145 times -numjobs 1 at -bs 4096", "1073745920 bytes", "1073741824 bytes (1 GiB)")
	// Each read in flight costs a few hundred bytes beside its buffer:
	// 10^8 one-byte reads, 100 MB of buffers, ran out of memory.
	requireRefusedBeforeData(t, []string{"-size", "1k", "-bs", "1", "-iodepth", "100000000", "-numjobs", "1", "-design", "pool"},
		"-iodepth 100000000 times -numjobs 1 at -bs 1", "100000000 reads in flight, above the bound of 1048576")

	// The ceiling reads with a buffer per GOMAXPROCS thread.
	procs := runtime.GOMAXPROCS(0)
	bs := randread.MaxBuffers/procs + 1
	_, err := parseFlags([]string{"-size", strconv.Itoa(bs), "-bs", strconv.Itoa(bs), "-iodepth", "1", "-numjobs", "1", "-design", "ceiling"}, &bytes.Buffer{})
	require.ErrorContains(t, err, "the ceiling's "+strconv.Itoa(procs)+" threads at -bs "+strconv.Itoa(bs))
	require.ErrorContains(t, err, "1073741824 bytes (1 GiB)")
	_, err = parseFlags([]string{"-size", strconv.Itoa(bs), "-bs", strconv.Itoa(bs), "-iodepth", "1", "-numjobs", "1", "-design", "pool"}, &bytes.Buffer{})
	require.Equal(t, procs == 1, err != nil, "the pool alone reads with one buffer of -bs: %v", err)
}

// The ceiling reads on one locked OS thread per GOMAXPROCS, and
// randread.NewCeiling refuses more than randread.MaxThreads of them: a
// GOMAXPROCS above the bound is a bad flag setting for -design ceiling,
// refused with the count, the bound and the way out before the data file is
// made, rather than a failure once the comparison has begun.
func TestRunCeilingThreadsAboveTheBoundExitsTwo(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(randread.MaxThreads + 1))
	requireRefusedBeforeData(t, []string{"-size", "8k", "-bs", "512", "-iodepth", "1", "-numjobs", "1", "-design", "pool,ceiling"},
		"the ceiling's "+strconv.Itoa(randread.MaxThreads+1)+" threads (GOMAXPROCS)",
		"above the bound of "+strconv.Itoa(randread.MaxThreads), "set GOMAXPROCS")

	_, err := parseFlags([]string{"-size", "8k", "-bs", "512", "-iodepth", "1", "-numjobs", "1", "-design", "pool"}, &bytes.Buffer{})
	require.NoError(t, err, "the designs other than the ceiling do not read on a thread per GOMAXPROCS")
}

// failingWriter refuses every write, as a full disk does.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errFull }

var errFull = errors.New("no space left on device")

// A report that cannot be written is a failed run, table or JSON: exit 1
// with the write's error, not 0 with the results lost. The JSON's error
// was returned, the table's ignored.
func TestRunReportNotWrittenExitsOne(t *testing.T) {
	for _, extra := range [][]string{{"-json"}, nil} {
		var stderr bytes.Buffer
		args := tinyRun(t.TempDir(), append([]string{"-iodepth", "1", "-numjobs", "1", "-mode", "defer"}, extra...)...)
		require.Equal(t, 1, run(args, failingWriter{}, &stderr), "%q: %s", extra, stderr.String())
		require.Contains(t, stderr.String(), errFull.Error(), "%q", extra)
	}
}
