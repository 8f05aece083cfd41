package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchio/threadpool/internal/cmdtest"
)

// benchab runs benchab.sh with args (see benchabCommand) and test binaries
// that print lines, as the real ones print their benchmarks' results. It
// returns the script's exit status, its standard output and standard error,
// and the results file (-o) it wrote, "" if none.
func benchab(t *testing.T, lines string, args ...string) (code int, stdout, stderr, results string) {
	t.Helper()
	return benchabExiting(t, lines, 0, args...)
}

// benchabExiting is benchab with test binaries that exit with status after
// printing lines, as a real one does when a benchmark fails.
func benchabExiting(t *testing.T, lines string, status int, args ...string) (code int, stdout, stderr, results string) {
	t.Helper()
	printed := filepath.Join(t.TempDir(), "lines")
	require.NoError(t, os.WriteFile(printed, []byte(lines), 0o644))
	cmd, out := benchabCommand(t, "#!/bin/sh\ncat '"+printed+"'\nexit "+strconv.Itoa(status)+"\n", args...)
	code, stdout, stderr = cmdtest.Run(t, cmd)
	if b, err := os.ReadFile(out); err == nil {
		results = string(b)
	}
	return code, stdout, stderr, results
}

// benchabCommand returns the command that runs benchab.sh with args in a
// git repository of its own, made for the test, whose one commit is the
// revision HEAD, and with a fake go command first on PATH that "builds"
// every test binary as the shell script binary. It also returns the path
// of the results file (-o).
func benchabCommand(t *testing.T, binary string, args ...string) (cmd *exec.Cmd, results string) {
	t.Helper()
	script, err := filepath.Abs("benchab.sh")
	require.NoError(t, err)
	src, err := os.ReadFile(script)
	require.NoError(t, err)
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	require.NoError(t, os.MkdirAll(filepath.Join(repo, "cmd", "tpbench"), 0o755))
	copied := filepath.Join(repo, "cmd", "tpbench", "benchab.sh")
	require.NoError(t, os.WriteFile(copied, src, 0o755))
	git := func(args ...string) {
		cmd := exec.Command("git", append([]string{"-C", repo, "-c", "user.name=t", "-c", "user.email=t@t",
			"-c", "commit.gpgsign=false"}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "git %v: %s", args, out)
	}
	git("init", "-q")
	git("add", ".")
	git("commit", "-q", "-m", "benchab")

	bin := filepath.Join(dir, "bin")
	require.NoError(t, os.Mkdir(bin, 0o755))
	fake := filepath.Join(dir, "binary")
	require.NoError(t, os.WriteFile(fake, []byte(binary), 0o755))
	// go test -c -o BINARY .
	fakeGo := "#!/bin/sh\ncp '" + fake + "' \"$4\" && chmod +x \"$4\"\n"
	require.NoError(t, os.WriteFile(filepath.Join(bin, "go"), []byte(fakeGo), 0o755))

	results = filepath.Join(dir, "results.txt")
	cmd = exec.Command("bash", append([]string{copied, "-o", results}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	return cmd, results
}

// A test binary run with GOMAXPROCS=1 names its benchmarks without the
// -GOMAXPROCS suffix: benchab.sh keeps their lines, as -1, instead of
// finding none and blaming the groups.
func TestBenchabWithoutProcsSuffix(t *testing.T) {
	for procs, lines := range map[string]string{
		"1": "BenchmarkSubmit/inflight=1/design=pool        \t     100\t      1000 ns/op\n" +
			"BenchmarkSubmit/inflight=1/design=goroutine   \t     100\t      2000 ns/op\n",
		"2": "BenchmarkSubmit/inflight=1/design=pool-2      \t     100\t      1000 ns/op\n" +
			"BenchmarkSubmit/inflight=1/design=goroutine-2 \t     100\t      2000 ns/op\n",
	} {
		code, stdout, stderr, results := benchab(t, lines, "-r", "2", "-g", "Submit/", "HEAD")
		require.Equal(t, 0, code, "GOMAXPROCS %s: %s", procs, stderr)
		require.Regexp(t, `BenchmarkSubmit/inflight=1/design=pool +time 1\.000 \[1\.00-1\.00\] ahead in 0/2`, stdout, procs)
		require.Regexp(t, `Submit/inflight=1/design=pool / design=goroutine +base 0\.50 \[0\.50-0\.50\] rev 0\.50`, stdout, procs)
		require.Contains(t, results, "BenchmarkSubmit/inflight=1/design=pool/v=base-"+procs+" ", procs)
		require.Contains(t, results, "BenchmarkSubmit/inflight=1/design=goroutine/v=rev-"+procs+" ", procs)
	}
}

// A -r that is not a positive number of rounds is refused with a message
// naming it, before anything is built or run.
func TestBenchabRefusesBadRounds(t *testing.T) {
	for _, rounds := range []string{"0", "00", "x", "-1", "2x", ""} {
		code, stdout, stderr, results := benchab(t, "", "-r", rounds, "HEAD")
		require.Equal(t, 2, code, "-r %q: %s", rounds, stderr)
		require.Contains(t, stderr, "-r", rounds)
		require.NotContains(t, stderr, "no benchmark matched", rounds)
		require.Empty(t, stdout, rounds)
		require.Empty(t, results, rounds)
	}
}

// A -T that is not a positive number of seconds within timeout's range is
// refused with a message naming it, before anything is built or run.
func TestBenchabRefusesBadTimeLimit(t *testing.T) {
	for _, limit := range []string{"0", "01", "x", "-1", "1.5", "1s", "", "1000000000"} {
		code, stdout, stderr, results := benchab(t, "", "-r", "1", "-T", limit, "HEAD")
		require.Equal(t, 2, code, "-T %q: %s", limit, stderr)
		require.Contains(t, stderr, "-T "+limit+":", limit)
		require.Empty(t, stdout, limit)
		require.Empty(t, results, limit)
	}
}

// A test binary that hangs is ended once it has run for -T seconds, with
// SIGQUIT (a Go binary prints its goroutines), and fails the comparison
// with a message that says so. go test's -timeout does not apply to
// benchmarks run straight from their binary: benchab.sh used to wait
// forever, without a word.
func TestBenchabEndsAHangingBuild(t *testing.T) {
	cmd, results := benchabCommand(t, "#!/bin/sh\necho BenchmarkSubmit/inflight=1/design=pool\nexec sleep 60\n",
		"-r", "2", "-T", "1", "-g", "Submit/", "HEAD")
	code, stdout, stderr := cmdtest.Run(t, cmd)
	require.Equal(t, 1, code, stderr)
	require.Regexp(t, `the (base|rev) build ran over 1 s \(-T\) in round 1, group Submit/, and was ended:\nBenchmarkSubmit/inflight=1/design=pool\n`, stderr)
	require.Empty(t, stdout)
	require.NoFileExists(t, results)
}

// A group that matches no benchmark in either build (a typing error in -g)
// fails the comparison, naming the group; one that matches in one build
// only is named on stderr and the comparison goes on. benchab.sh used to
// drop such groups without a word, and complained only when no group
// matched anything.
func TestBenchabNamesAGroupThatMatchesNothing(t *testing.T) {
	both := filepath.Join(t.TempDir(), "both")
	require.NoError(t, os.WriteFile(both,
		[]byte("BenchmarkSubmit/inflight=1/design=pool-2 \t 10 \t 100 ns/op\n"), 0o644))
	// The binary prints the Submit line for either build, and a
	// RandRead line only in the build that benchab.sh names rev.
	binary := "#!/bin/sh\ncase \"$*\" in\n*Submit*) cat '" + both + "' ;;\n" +
		"*RandRead*) case $0 in *rev.test) echo 'BenchmarkRandRead/iodepth=1-2 \t 10 \t 100 ns/op \t 5 IOPS' ;; esac ;;\nesac\n"
	run := func(args ...string) (code int, stdout, stderr string) {
		cmd, _ := benchabCommand(t, binary, args...)
		return cmdtest.Run(t, cmd)
	}

	code, stdout, stderr := run("-r", "2", "-g", "Submit/", "-g", "Sbumit/", "HEAD")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "-g Sbumit/ matched no benchmark in either build")
	require.Empty(t, stdout)

	code, stdout, stderr = run("-r", "2", "-g", "Submit/", "-g", "RandRead/", "HEAD")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "-g RandRead/ matched no benchmark in the base build")
	require.NotContains(t, stderr, "in the rev build")
	require.NotContains(t, stderr, "-g Submit/")
	require.Contains(t, stdout, "BenchmarkSubmit/inflight=1/design=pool")
}

// A -t that go test would not take as -test.benchtime (a duration, or a
// count of iterations such as 100x) is refused with a message naming it,
// before anything is built or run; those it takes go through.
func TestBenchabRefusesBadBenchtime(t *testing.T) {
	for _, bt := range []string{"x", "1", "0x", "s", "3 s", "0s", "0.0s", "", "-1s"} {
		code, stdout, stderr, results := benchab(t, "", "-r", "1", "-t", bt, "HEAD")
		require.Equal(t, 2, code, "-t %q: %s", bt, stderr)
		require.Contains(t, stderr, "-t "+bt+":", bt)
		require.Empty(t, stdout, bt)
		require.Empty(t, results, bt)
	}
	lines := "BenchmarkSubmit/inflight=1/design=pool-2 \t 10 \t 100 ns/op\n" +
		"BenchmarkSubmit/inflight=1/design=goroutine-2 \t 10 \t 100 ns/op\n"
	for _, bt := range []string{"2x", "0.5s", "1m30s", ".3s", "1.s", "300ms"} {
		code, _, stderr, _ := benchab(t, lines, "-r", "1", "-t", bt, "-g", "Submit/", "HEAD")
		require.Equal(t, 0, code, "-t %q: %s", bt, stderr)
	}
}

// An unknown option, and a call without a base revision or with more than
// two, are refused with the usage on stderr, not stdout, before anything is
// built or run.
func TestBenchabRefusesBadUsage(t *testing.T) {
	for _, args := range [][]string{{"-x", "HEAD"}, {}, {"-r", "1"}, {"HEAD", "HEAD", "HEAD"}} {
		code, stdout, stderr, results := benchab(t, "", args...)
		require.Equal(t, 2, code, "%q: %s", args, stderr)
		require.True(t, strings.HasSuffix(stderr, cmdtest.Usage(t, "benchab.sh")), "%q: the whole usage: %s", args, stderr)
		require.Empty(t, stdout, args)
		require.Empty(t, results, args)
	}
}

// A benchmark that fails (a short read, say) prints its failure on the test
// binary's standard output and exits 1. benchab.sh stops there, and says
// why on stderr: it filtered that output down to the benchmark lines, so it
// used to exit 1 without a word, the failure and the failed build dropped.
func TestBenchabReportsAFailedBenchmark(t *testing.T) {
	lines := "BenchmarkRandRead/iodepth=1/numjobs=8/mode=defer-2 \t--- FAIL: BenchmarkRandRead/iodepth=1/numjobs=8/mode=defer-2\n" +
		"    bench_test.go:146: randread: short read: read at offset 4096 returned 0 of 4096 bytes: EOF\n" +
		"--- FAIL: BenchmarkRandRead\nFAIL\n"
	code, stdout, stderr, results := benchabExiting(t, lines, 1, "-r", "2", "-g", "RandRead/", "HEAD")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "randread: short read", "the benchmark's failure reaches the user")
	require.Contains(t, stderr, "round 1", "with the round")
	require.Empty(t, stdout, "no ratios from a failed run")
	require.Empty(t, results)
}

// Ctrl-C (SIGINT to the foreground process group) ends benchab.sh by that
// signal, once its temporary directory is removed, so that a shell loop
// over several comparisons stops as well. Its trap used to remove the
// directory and go on: it blamed the build whose test binary the signal
// had ended ("the base build failed"), could not show that binary's
// output (removed) and exited 1, which a calling loop takes for a failure
// of its own before it starts its next comparison.
func TestBenchabEndsByCtrlC(t *testing.T) {
	started := filepath.Join(t.TempDir(), "started")
	cmd, results := benchabCommand(t, "#!/bin/sh\necho \"$0\" >'"+started+".tmp'\nmv '"+started+".tmp' '"+started+"'\nexec sleep 60\n",
		"-r", "2", "-g", "Submit/", "HEAD")
	stdout, stderr, binary := cmdtest.CtrlC(t, cmd, started, time.Minute)
	require.NotContains(t, stderr, "failed")
	require.Empty(t, stdout)
	require.NoFileExists(t, results)
	require.NoDirExists(t, filepath.Dir(strings.TrimSpace(binary)), "the temporary directory is removed")
}

// A results file (-o) that cannot be written is refused before anything is
// built or run: benchab.sh used to find out once every round had run, and
// remove their results with its temporary directory.
func TestBenchabRefusesAnUnwritableResultsFile(t *testing.T) {
	lines := "BenchmarkSubmit/inflight=1/design=pool-2 \t 10 \t 100 ns/op\n"
	out := filepath.Join(t.TempDir(), "no such directory", "results.txt")
	code, stdout, stderr, _ := benchab(t, lines, "-r", "2", "-g", "Submit/", "-o", out, "HEAD")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "-o "+out+":")
	require.NotContains(t, stderr, "round 1 of 2")
	require.Empty(t, stdout)
}

// A test binary killed by another hand (the kernel's OOM killer, say) is
// a failed build, not one that ran over -T: timeout exits 137 for both.
func TestBenchabTellsAKilledBuildFromAHangingOne(t *testing.T) {
	cmd, results := benchabCommand(t, "#!/bin/sh\necho BenchmarkSubmit/inflight=1/design=pool\nkill -9 $$\n",
		"-r", "2", "-g", "Submit/", "HEAD")
	code, stdout, stderr := cmdtest.Run(t, cmd)
	require.Equal(t, 1, code, stderr)
	require.Regexp(t, `the (base|rev) build failed in round 1, group Submit/:\nBenchmarkSubmit/inflight=1/design=pool\n`, stderr)
	require.NotContains(t, stderr, "ran over")
	require.Empty(t, stdout)
	require.NoFileExists(t, results)
}

// The last table compares each benchmark's median over all the rounds, as
// benchstat does, which differs from the median of the per-round ratios
// when the rounds disagree, and gives the medians of the cores beside it.
func TestBenchabComparesTheMedians(t *testing.T) {
	calls := filepath.Join(t.TempDir(), "calls")
	// Both builds' calls in round r print the values of row r: the order of
	// the builds within a round is random, the round of a call is not.
	binary := `#!/bin/sh
n=$(cat '` + calls + `' 2>/dev/null || echo 0)
echo $((n + 1)) >'` + calls + `'
case $((n / 2)) in
0) p=100 g=100 pi=900 pc=1.2 gi=600 gc=1.8 ;;
1) p=200 g=400 pi=1200 pc=1.6 gi=700 gc=1.7 ;;
*) p=300 g=150 pi=1000 pc=1.3 gi=650 gc=1.9 ;;
esac
printf 'BenchmarkSubmit/inflight=1/design=pool-2 \t 100\t %s ns/op\n' $p
printf 'BenchmarkSubmit/inflight=1/design=goroutine-2 \t 100\t %s ns/op\n' $g
printf 'BenchmarkRandReadDesign/iodepth=64/design=pool-2 \t 100\t 1000 ns/op\t %s IOPS\t %s cores\n' $pi $pc
printf 'BenchmarkRandReadDesign/iodepth=64/design=goroutine-2 \t 100\t 1000 ns/op\t %s IOPS\t %s cores\n' $gi $gc
`
	cmd, _ := benchabCommand(t, binary, "-r", "3", "-g", "Submit/", "HEAD")
	code, stdout, stderr := cmdtest.Run(t, cmd)
	require.Equal(t, 0, code, stderr)
	// Per round, pool / goroutine: 1, 0.5 and 2 in time; 1.5, 1.71 and 1.54
	// in reads.
	require.Regexp(t, `Submit/inflight=1/design=pool / design=goroutine +base 1\.00 \[0\.50-2\.00\] rev 1\.00 \[0\.50-2\.00\] \(time\)`, stdout)
	// The medians: 200 / 150 ns, 1000 / 650 reads a second on 1.3 and 1.8
	// cores.
	require.Contains(t, stdout, "ratio of the medians")
	medians := stdout[strings.Index(stdout, "ratio of the medians"):]
	require.Regexp(t, `Submit/inflight=1/design=pool / design=goroutine +base 1\.33 rev 1\.33 \(time\)`, medians)
	require.Regexp(t, `RandReadDesign/iodepth=64/design=pool / design=goroutine +base 1\.54 \[1\.30 \| 1\.80\] rev 1\.54 \[1\.30 \| 1\.80\]\n`, medians)
}
