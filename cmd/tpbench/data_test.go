package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/batchio/threadpool/internal/cmdtest"
	"github.com/stretchr/testify/require"
)

// TestInterruptRemovesTempFile: without -filename the data file is a
// temporary file, 256 MiB by default, removed at exit: an interrupted run
// (Ctrl-C, SIGTERM, or SIGHUP from a closed terminal) removes it too, and
// does not exit 0.
func TestInterruptRemovesTempFile(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			// A signal this process handles starts as the default action in
			// a child, even where the test itself was started ignoring it
			// (nohup, a background job), which the child would inherit.
			handled := make(chan os.Signal, 1)
			signal.Notify(handled, sig)
			defer signal.Stop(handled)
			cmd, _, r, tmp := startLongRun(t)
			require.NoError(t, cmd.Process.Signal(sig))
			go r.WriteTo(new(bytes.Buffer))
			err := cmd.Wait()
			require.Error(t, err, "an interrupted run must not exit 0")
			left, err := os.ReadDir(tmp)
			require.NoError(t, err)
			var names []string
			for _, e := range left {
				names = append(names, e.Name())
			}
			require.Empty(t, names, "the temporary data file outlives the interrupted run")
		})
	}
}

// ignoredSignalsHelperEnv names, in the environment of the test binary run
// as TestIgnoredSignalsStayIgnored's helper process, the directory to watch.
const ignoredSignalsHelperEnv = "TPBENCH_TEST_IGNORED_SIGNALS_DIR"

// reportIgnoredSignals is that helper process: it prints whether SIGINT and
// SIGHUP are ignored before removeOnSignal watches dir, while it does, and
// after.
func reportIgnoredSignals(dir string) {
	sigs := []os.Signal{os.Interrupt, syscall.SIGHUP}
	ignored := func() (out []bool) {
		for _, sig := range sigs {
			out = append(out, signal.Ignored(sig))
		}
		return out
	}
	before := ignored()
	remove := removeOnSignal(dir)
	during := ignored()
	remove()
	for i, sig := range sigs {
		fmt.Printf("%v ignored before=%v during=%v after=%v\n", sig, before[i], during[i], ignored()[i])
	}
}

// A tpbench whose parent ignores SIGINT (a background job of a shell) or
// SIGHUP (nohup) keeps ignoring it while its temporary data file is
// watched, and after. Run in a process of its own: a process cannot ignore
// SIGINT and undo it.
func TestIgnoredSignalsStayIgnored(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", `trap "" INT HUP; exec "$0" -test.run='^$'`, os.Args[0])
	cmd.Env = append(os.Environ(), ignoredSignalsHelperEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "interrupt ignored before=true during=true after=true")
	require.Contains(t, string(out), "hangup ignored before=true during=true after=true")
	_, err = os.Stat(dir)
	require.ErrorIs(t, err, os.ErrNotExist, "removed by the returned func")
}

// A reader of the progress line (or the table) that goes away, as less
// quit early does, makes tpbench's next write raise SIGPIPE: the temporary
// data file is removed and the run ends with status 141. Go's default
// action for SIGPIPE on a standard stream ended the process at once,
// leaving the file behind.
func TestBrokenPipeRemovesTempFile(t *testing.T) {
	cmd, stderr, _, tmp := startLongRun(t)
	require.NoError(t, stderr.Close()) // the reader goes away
	err := cmd.Wait()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	require.Equal(t, 141, exit.ExitCode())
	left, err := os.ReadDir(tmp)
	require.NoError(t, err)
	require.Empty(t, left, "the temporary data file outlives the broken pipe")
}

// startLongRun starts an hour-long run of tpbench on a temporary data file
// in tmp, with its progress line on stderr, and returns once the measured
// round runs (the data file exists by then): the process, its stderr (r
// reads it) and tmp.
func startLongRun(t *testing.T) (cmd *exec.Cmd, stderr io.ReadCloser, r *bufio.Reader, tmp string) {
	t.Helper()
	dir := t.TempDir()
	bin := cmdtest.Build(t, dir, "tpbench")
	tmp = filepath.Join(dir, "tmp")
	require.NoError(t, os.Mkdir(tmp, 0o755))
	cmd = exec.Command(bin, "-size", "1M", "-iodepth", "1", "-numjobs", "1", "-design", "pool",
		"-mode", "defer", "-runtime", "1h", "-rounds", "1", "-progress=true")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	stderr = cmdtest.Start(t, cmd)
	r = bufio.NewReader(stderr)
	// The progress line is drawn once the measured round runs.
	for range 2 {
		_, err := r.ReadString('\r')
		require.NoError(t, err)
	}
	left, err := os.ReadDir(tmp)
	require.NoError(t, err)
	require.Len(t, left, 1, "the temporary directory of the data file")
	return cmd, stderr, r, tmp
}
