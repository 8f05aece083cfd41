package main

import (
	"bytes"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseDesigns(t *testing.T) {
	for in, want := range map[string]string{
		"all":                  "pool/each pool/defer goroutine/each goroutine/defer chanpool/each chanpool/defer ceiling",
		"pool":                 "pool/each pool/defer",
		"ceiling":              "ceiling",
		"chanpool, ceiling":    "chanpool/each chanpool/defer ceiling",
		"ceiling,pool,ceiling": "pool/each pool/defer ceiling",
	} {
		o, err := parseFlags([]string{"-design", in, "-mode", "each,defer"}, &bytes.Buffer{})
		require.NoError(t, err, in)
		var got []string
		for _, s := range o.subjects() {
			got = append(got, s.String())
		}
		require.Equal(t, want, strings.Join(got, " "), in)
	}
}

func TestProgressFlagTriState(t *testing.T) {
	terminal := func(io.Writer) bool { return true }
	notTerminal := func(io.Writer) bool { return false }
	for args, want := range map[string]struct{ onTerminal, elsewhere bool }{
		"":                 {true, false}, // unset: only on a terminal
		"-progress":        {true, true},
		"-progress=true":   {true, true},
		"-progress=1":      {true, true},
		"-progress=false":  {false, false},
		"-progress=0":      {false, false},
		"-progress=FALSE ": {false, false},
	} {
		o, err := parseFlags(strings.Fields(args), &bytes.Buffer{})
		require.NoError(t, err, args)
		require.Equal(t, args != "", o.progress.set, args)
		require.Equal(t, want.onTerminal, o.progress.show(io.Discard, terminal), args)
		require.Equal(t, want.elsewhere, o.progress.show(io.Discard, notTerminal), args)
	}
	var unset progressFlag
	require.Equal(t, "auto", unset.String())
	require.NoError(t, unset.Set("false"))
	require.Equal(t, "false", unset.String())
}

func TestWriterIsTerminal(t *testing.T) {
	require.False(t, writerIsTerminal(&bytes.Buffer{}), "a buffer")
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	require.False(t, writerIsTerminal(w), "a pipe, as in tpbench 2>&1 | tee log")
	f, err := os.Create(t.TempDir() + "/log")
	require.NoError(t, err)
	defer f.Close()
	require.False(t, writerIsTerminal(f), "a file")
	if runtime.GOOS != "linux" {
		return
	}
	// A pseudo-terminal's master side is a terminal too.
	pty, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal to check the positive case with: %v", err)
	}
	defer pty.Close()
	require.True(t, writerIsTerminal(pty), "a terminal")
}

// TestAutoProgressFollowsTheTerminal runs the command with the progress
// line unset: a terminal gets it, anything else only the table.
func TestAutoProgressFollowsTheTerminal(t *testing.T) {
	for _, terminal := range []bool{true, false} {
		o, err := parseFlags(append(tinyArgs(t.TempDir()), "-mode", "each", "-design", "pool"), &bytes.Buffer{})
		require.NoError(t, err)
		require.False(t, o.progress.set)
		o.isTerminal = func(io.Writer) bool { return terminal }
		var stdout, stderr bytes.Buffer
		require.NoError(t, compare(o, &stdout, &stderr))
		if terminal {
			require.Contains(t, stderr.String(), "\riodepth=4 numjobs=2 round 1/2 pool/each")
		} else {
			require.Empty(t, stderr.String())
		}
		require.Contains(t, stdout.String(), "pool")
	}
}

func TestHeaderNamesTheMachine(t *testing.T) {
	o, err := parseFlags([]string{"-size", "64M", "-rounds", "3", "-runtime", "3s"}, &bytes.Buffer{})
	require.NoError(t, err)
	var b bytes.Buffer
	writeHeader(&b, o, machine{
		CPUModel: "Example CPU 9000", CPUs: 8, GOMAXPROCS: 4, Kernel: "Linux 6.1.0 x86_64",
		GoVersion: "go1.26.8 linux/amd64", LoadAvg: "0.50 0.40 0.30", Date: "2026-11-25 14:02 UTC",
	})
	require.Equal(t, `tpbench -size 64M -rounds 3 -runtime 3s
machine: Example CPU 9000, 8 CPUs, GOMAXPROCS 4, Linux 6.1.0 x86_64, go1.26.8 linux/amd64
load average before the run: 0.50 0.40 0.30; started 2026-11-25 14:02 UTC
randread bs=4096 size=64M, 3 rounds, 3s per subject
`, b.String())

	b.Reset()
	writeHeader(&b, o, machine{CPUs: 1, GOMAXPROCS: 1, GoVersion: "go1.26.8 plan9/386", Date: "now"})
	require.Contains(t, b.String(), "machine: unknown, 1 CPUs, GOMAXPROCS 1, unknown, go1.26.8 plan9/386\n")
	require.Contains(t, b.String(), "load average before the run: unknown; started now\n")
}

func TestReadMachine(t *testing.T) {
	m := readMachine()
	require.Equal(t, runtime.NumCPU(), m.CPUs)
	require.Equal(t, runtime.GOMAXPROCS(0), m.GOMAXPROCS)
	require.Equal(t, runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH, m.GoVersion)
	started, err := time.Parse("2006-01-02 15:04 MST", m.Date)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), started, 2*time.Minute)
	if runtime.GOOS == "linux" {
		require.True(t, strings.HasPrefix(m.Kernel, "Linux "), m.Kernel)
		require.Len(t, strings.Fields(m.LoadAvg), 3, m.LoadAvg)
	}
}

func TestCPUModel(t *testing.T) {
	x86 := "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n" +
		"processor\t: 1\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n"
	require.Equal(t, "AMD EPYC 7B13 64-Core Processor", cpuModel(x86))
	power := "processor\t: 0\ncpu\t\t: POWER9 (raw), altivec supported\nclock\t\t: 2166.000000MHz\n"
	require.Equal(t, "POWER9 (raw), altivec supported", cpuModel(power))
	arm := "processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n\nHardware\t: BCM2835\n"
	require.Equal(t, "BCM2835", cpuModel(arm))
	require.Empty(t, cpuModel("processor\t: 0\nBogoMIPS\t: 50.00\n"))
	require.Empty(t, cpuModel(""))
}

func TestLoadAvg(t *testing.T) {
	require.Equal(t, "5.12 4.80 4.33", loadAvg("5.12 4.80 4.33 3/119 20303\n"))
	require.Empty(t, loadAvg("0.1 0.2"))
	require.Empty(t, loadAvg(""))
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{256 << 20: "256M", 2 << 30: "2G", 12 << 10: "12K", 4097: "4097", 1536 << 20: "1536M"} {
		require.Equal(t, want, formatSize(n))
		back, err := parseSize(want)
		require.NoError(t, err)
		require.Equal(t, n, back, "formatSize writes what -size reads")
	}
}
