package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchio/threadpool/internal/cmdtest"
)

// compare.sh refuses a number that is not one (rounds, seconds, MiB,
// GOMAXPROCS) with a message naming its flag and exit status 2, before it
// looks for its tools, builds or starts anything.
func TestCompareRefusesBadNumbers(t *testing.T) {
	for _, args := range [][]string{
		{"-r", "0"}, {"-r", "x"}, {"-r", "-1"},
		{"-t", "0"}, {"-t", "x"}, {"-t", ""},
		{"-s", "0"}, {"-s", "x"}, {"-s", "a[0]"},
		{"-p", "x"}, {"-p", "-1"},
		// tpnbd reads -procs as Go does, 08 as a bad octal number and 010
		// as 8.
		{"-p", "08"}, {"-p", "010"},
	} {
		requireRefused(t, append([]string{"-j", "randread:1:1"}, args...), args[0]+" "+args[1]+":")
	}
}

// compare.sh refuses a number too large for what it feeds (the shell's
// arithmetic, seq, fio, tpnbd's GOMAXPROCS) with a message naming its flag
// and the bound, and exit status 2: -s 8796093022208, whose bytes are 2^63,
// wrapped to a negative size in the shell's arithmetic, and a -p of 2^32+1
// ran tpnbd with GOMAXPROCS 1.
func TestCompareRefusesNumbersAboveTheirBound(t *testing.T) {
	for _, c := range []struct {
		args  []string
		bound string
	}{
		{[]string{"-s", "8796093022208"}, "8796093022207"},
		{[]string{"-s", "99999999999999999999"}, "8796093022207"},
		{[]string{"-s", "9000000000000"}, "8796093022207"},
		{[]string{"-r", "9223372036854775808"}, "9223372036854775807"},
		{[]string{"-r", "100000000000000000000"}, "9223372036854775807"},
		{[]string{"-t", "9223372036855"}, "9223372036854"},
		{[]string{"-p", "1025"}, "1024"},
		{[]string{"-p", "4294967297"}, "1024"},
	} {
		requireRefused(t, append([]string{"-j", "randread:1:1"}, c.args...), c.args[0]+" "+c.args[1]+": ")
		requireRefused(t, append([]string{"-j", "randread:1:1"}, c.args...), "at most "+c.bound)
	}
	for _, job := range []string{"randread:2147483648:1", "randwrite:1:2147483648", "randread:1:99999999999999999999"} {
		requireRefused(t, []string{"-j", "randread:1:1," + job}, "-j: "+job+": ")
		requireRefused(t, []string{"-j", "randread:1:1," + job}, "at most 2147483647")
	}
}

// The bounds themselves are numbers compare.sh takes: it goes on past its
// checks of the arguments to look for its tools, which are not on PATH.
func TestCompareTakesNumbersAtTheirBound(t *testing.T) {
	stdout, stderr, code := runScript(t, argumentTools(t), "compare.sh", "-s", "8796093022207", "-r", "9223372036854775807",
		"-t", "9223372036854", "-p", "1024", "-j", "randread:2147483647:2147483647")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "fio not found")
	require.Empty(t, stdout)
}

// An argument that is not an option, and what follows it, is not ignored:
// getopts stops at the first one, so "compare.sh tcp -r 3" would have run
// the default five rounds on Unix sockets.
func TestCompareRefusesStrayArguments(t *testing.T) {
	for _, args := range [][]string{
		{"extra"},
		{"-r", "1", "-t", "1", "-s", "1", "-j", "randread:1:1", "tcp"},
		{"-j", "randread:1:1", "-s", "1", "-t", "1", "r", "-r", "0"},
	} {
		requireRefused(t, args, "unexpected argument")
	}
}

// An unknown option is refused with the usage, on stderr like every other
// refusal: it used to go to stdout.
func TestCompareRefusesUnknownOptions(t *testing.T) {
	requireRefused(t, []string{"-x"}, "Usage: cmd/tpnbd/compare.sh")
}

// The usage printed on a refusal is the whole comment block at the top of
// the script: compare.sh and sparsecopy.sh printed a fixed range of lines,
// which had fallen behind the comments and cut compare.sh's help in the
// middle of a sentence.
func TestScriptsPrintTheirWholeUsage(t *testing.T) {
	for _, script := range []string{"compare.sh", "sparsecopy.sh"} {
		usage := cmdtest.Usage(t, script)
		require.Contains(t, usage, "Usage: cmd/tpnbd/"+script)
		require.Contains(t, usage, "# Needs ", script)
		cmd := exec.Command("bash", script, "-x")
		cmd.Env = append(os.Environ(), "PATH="+argumentTools(t))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		require.Error(t, cmd.Run(), script)
		require.True(t, strings.HasSuffix(stderr.String(), usage), "%s printed:\n%s", script, stderr.String())
	}
}

// requireRefused runs compare.sh with args and requires that it print
// nothing, exit 2 and say why on stderr, in words containing want. Its PATH
// has none of the tools the comparison runs: if it took args, it would stop
// with exit status 1 where it looks for them.
func requireRefused(t *testing.T, args []string, want string) {
	t.Helper()
	requireScriptRefused(t, "compare.sh", args, want)
}

// requireScriptRefused is requireRefused for any of this directory's
// scripts: it runs script with args and a PATH of argumentTools alone.
func requireScriptRefused(t *testing.T, script string, args []string, want string) {
	t.Helper()
	stdout, stderr, code := runScript(t, argumentTools(t), script, args...)
	require.Equal(t, 2, code, "%q: %s%s", args, stdout, stderr)
	require.Contains(t, stderr, want, args)
	require.Empty(t, stdout, args)
}

// runScript runs one of this directory's scripts with args and PATH set to
// path, and returns its stdout, its stderr and its exit status.
func runScript(t *testing.T, path, script string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{script}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+path)
	code, stdout, stderr = cmdtest.Run(t, cmd)
	return stdout, stderr, code
}

// argumentTools returns a directory holding the commands compare.sh and
// sparsecopy.sh run while they check their arguments, for a PATH of them
// alone.
func argumentTools(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	for _, tool := range []string{"basename", "dirname", "sed"} {
		path, err := exec.LookPath(tool)
		require.NoError(t, err)
		require.NoError(t, os.Symlink(path, filepath.Join(bin, tool)))
	}
	return bin
}

// A server whose median IOPS is zero, because its fio runs failed or did
// no I/O, has no ratio: the table shows "-" where it divided by zero
// (inf under mawk, a fatal error under gawk), and the script says on
// stderr which server did no I/O and exits 1 once the tables are out. A
// failed fio run used to end the script at once, with no table. The table
// of fio's CPU per job shows what fio reported (fakeFioCores for a run
// that did not fail), 0.00 for a failed run.
func TestCompareMarksAServerThatDidNoIO(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("compare.sh reads /proc (the load average, the servers' CPU time)")
	}
	row := func(iops map[string]int, ratios string) string {
		return fmt.Sprintf("| randread | 1 | 1 | %d | %d | %d | %d | %s |",
			max(iops["tpnbd-defer"], 0), max(iops["tpnbd-each"], 0),
			max(iops["qemu-nbd"], 0), max(iops["nbdkit"], 0), ratios)
	}
	for _, c := range []struct {
		name   string
		iops   map[string]int // fio fails for a negative count
		ratios string         // defer/each | defer/qemu-nbd | defer/nbdkit
		idle   string         // the server that did no I/O
	}{
		{"every server works", map[string]int{"tpnbd-defer": 3000, "tpnbd-each": 1500, "qemu-nbd": 1000, "nbdkit": 2000}, "2.00 | 3.00 | 1.50", ""},
		{"fio fails against nbdkit", map[string]int{"tpnbd-defer": 3000, "tpnbd-each": 1500, "qemu-nbd": 1000, "nbdkit": -1}, "2.00 | 3.00 | -", "nbdkit"},
		{"tpnbd-each does nothing", map[string]int{"tpnbd-defer": 3000, "tpnbd-each": 0, "qemu-nbd": 1000, "nbdkit": 2000}, "- | 3.00 | 1.50", "tpnbd-each"},
	} {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, code := runCompareWithFakes(t, c.iops)
			require.Contains(t, stdout, row(c.iops, c.ratios), "stderr: %s", stderr)
			require.Contains(t, stdout, fioCoresRow(c.iops), "stderr: %s", stderr)
			require.NotContains(t, stdout, "inf")
			require.NotContains(t, stdout, "nan")
			if c.idle == "" {
				require.Equal(t, 0, code, stderr)
				require.NotContains(t, stderr, "did no I/O")
				return
			}
			require.Equal(t, 1, code, stderr)
			require.Contains(t, stderr, c.idle+" did no I/O")
		})
	}
}

// fakeFioCores is the CPU the fake fio reports for its job: 12.5% user
// and 37.5% system time.
const fakeFioCores = 0.5

// fioCoresRow is compare.sh's row of fio's cores per job for the run of
// runCompareWithFakes with iops: fakeFioCores for each server whose fio run
// succeeded, 0 for one whose run failed, and the ratios of those.
func fioCoresRow(iops map[string]int) string {
	cores := map[string]float64{}
	for s, n := range iops {
		if n >= 0 {
			cores[s] = fakeFioCores
		}
	}
	ratio := func(a, b string) string {
		if cores[b] == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", cores[a]/cores[b])
	}
	return fmt.Sprintf("| randread | 1 | 1 | %.2f | %.2f | %.2f | %.2f | %s | %s | %s |",
		cores["tpnbd-defer"], cores["tpnbd-each"], cores["qemu-nbd"], cores["nbdkit"],
		ratio("tpnbd-defer", "tpnbd-each"), ratio("tpnbd-defer", "qemu-nbd"), ratio("tpnbd-defer", "nbdkit"))
}

// runCompareWithFakes runs compare.sh -q on one job with stand-ins for
// fio, qemu-nbd and nbdkit: the servers are tpnbd (as the script builds
// it), and fio reports iops[server] reads per second for the server its
// URI names, or fails for a negative count. It returns the script's
// stdout, its stderr and its exit status.
func runCompareWithFakes(t *testing.T, iops map[string]int) (stdout, stderr string, code int) {
	t.Helper()
	var cases strings.Builder
	for s, n := range iops {
		fmt.Fprintf(&cases, "\t%s) iops=%d ;;\n", s, n)
	}
	fio := `#!/usr/bin/env bash
for a; do
	case $a in --uri=*) uri=${a#--uri=} ;; esac
done
server=$(basename "${uri##*socket=}" .sock)
case $server in
` + cases.String() + `esac
if [ "$iops" -lt 0 ]; then
	echo "fio: $server: connection failed" >&2
	exit 1
fi
# Terse version 3: read KiB in field 6, read IOPS in 8, the same for
# writes in 47 and 49, the job's user and system CPU in 88 and 89.
line="3;fio-3;cmp;0;0;$((iops * 4));0;$iops"
for ((i = 9; i <= 87; i++)); do line+=";0"; done
echo "$line;12.500000%;37.500000%;0;0;0"
`
	return runScript(t, compareFakes(t, fio)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"compare.sh", "-q", "-s", "1", "-j", "randread:1:1")
}

// compareFakes returns a directory holding stand-ins for compare.sh's
// tools: qemu-nbd and nbdkit run tpnbd (as the script builds it) on the
// socket they are given, and fio is the script fio.
func compareFakes(t *testing.T, fio string) string {
	t.Helper()
	bin := t.TempDir()
	server := `#!/usr/bin/env bash
while [ $# -gt 0 ]; do
	case $1 in -k | -U) sock=$2; shift ;; esac
	shift
done
dir=$(dirname "$sock")
exec "$dir/tpnbd" -q -unix "$sock" "$dir/disk.img"
`
	for name, text := range map[string]string{"qemu-nbd": server, "nbdkit": server, "fio": fio} {
		require.NoError(t, os.WriteFile(filepath.Join(bin, name), []byte(text), 0o755))
	}
	return bin
}

// Ctrl-C (SIGINT to the foreground process group) ends compare.sh by that
// signal, once its servers are stopped and its directory removed, so that
// a shell loop over several comparisons stops as well. Its trap used to
// clean up and let the script go on, to exit 1 at its next step (or, in
// the middle of starting the servers, after waiting 10 s for a socket that
// was gone), which a calling loop takes for a failure, not an interrupt.
func TestCompareEndsByCtrlC(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("compare.sh reads /proc (the load average, the servers' CPU time)")
	}
	started := filepath.Join(t.TempDir(), "started")
	bin := compareFakes(t, `#!/usr/bin/env bash
for a; do
	case $a in --uri=*) uri=${a#--uri=} ;; esac
done
echo "${uri##*socket=}" >'`+started+`.tmp'
mv '`+started+`.tmp' '`+started+`'
exec sleep 60
`)
	cmd := exec.Command("bash", "compare.sh", "-q", "-s", "1", "-j", "randread:1:1")
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	stdout, _, sock := cmdtest.CtrlC(t, cmd, started, time.Minute)
	require.Empty(t, stdout)
	require.NoDirExists(t, filepath.Dir(strings.TrimSpace(sock)), "the temporary directory is removed")
}

// A server that exits before it listens stops compare.sh at once, naming
// the server, rather than after ten seconds of waiting for its socket; and
// qemu-nbd is told to take as many connections as the largest job opens
// (its default is 16: a job of 20 would have failed against it).
func TestCompareStopsWhenAServerExitsBeforeListening(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("compare.sh reads /proc (the load average, the servers' CPU time)")
	}
	bin := compareFakes(t, "#!/bin/sh\nexit 1\n")
	args := filepath.Join(t.TempDir(), "qemu-nbd.args")
	require.NoError(t, os.WriteFile(filepath.Join(bin, "qemu-nbd"),
		[]byte("#!/usr/bin/env bash\necho \"$*\" >'"+args+"'\nexit 3\n"), 0o755))
	stdout, stderr, code := runScript(t, bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"compare.sh", "-q", "-s", "1", "-j", "randread:1:1,randwrite:64:20")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "compare.sh: qemu-nbd exited before it listened")
	require.Empty(t, stdout)
	got, err := os.ReadFile(args)
	require.NoError(t, err)
	require.Contains(t, " "+string(got), " -e 20 ")
}
