package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestInterruptRemovesTempFile: without -filename the data file is a
// temporary file, 256 MiB by default, removed at exit: an interrupted run
// (Ctrl-C, SIGTERM) removes it too, and does not exit 0.
func TestInterruptRemovesTempFile(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			bin := filepath.Join(dir, "tpbench")
			out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
			require.NoError(t, err, "%s", out)
			tmp := filepath.Join(dir, "tmp")
			require.NoError(t, os.Mkdir(tmp, 0o755))

			cmd := exec.Command(bin, "-size", "1M", "-iodepth", "1", "-numjobs", "1", "-design", "pool",
				"-mode", "defer", "-runtime", "1h", "-rounds", "1", "-progress=true")
			cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
			stderr, err := cmd.StderrPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			t.Cleanup(func() {
				if cmd.ProcessState == nil {
					cmd.Process.Kill()
					cmd.Wait()
				}
			})
			// The progress line is drawn once the measured round runs, so
			// the data file exists by then.
			r := bufio.NewReader(stderr)
			_, err = r.ReadString('\r')
			require.NoError(t, err)
			_, err = r.ReadString('\r')
			require.NoError(t, err)
			left, err := os.ReadDir(tmp)
			require.NoError(t, err)
			require.Len(t, left, 1, "the temporary directory of the data file")

			require.NoError(t, cmd.Process.Signal(sig))
			go r.WriteTo(new(bytes.Buffer))
			err = cmd.Wait()
			require.Error(t, err, "an interrupted run must not exit 0")
			left, err = os.ReadDir(tmp)
			require.NoError(t, err)
			var names []string
			for _, e := range left {
				names = append(names, e.Name())
			}
			require.Empty(t, names, "the temporary data file outlives the interrupted run")
		})
	}
}

// ignoredSIGINTHelperEnv names, in the environment of the test binary run
// as TestIgnoredSIGINTStaysIgnored's helper process, the directory to watch.
const ignoredSIGINTHelperEnv = "TPBENCH_TEST_IGNORED_SIGINT_DIR"

// reportIgnoredSIGINT is that helper process: it prints whether SIGINT is
// ignored before removeOnSignal watches dir, while it does, and after.
func reportIgnoredSIGINT(dir string) {
	before := signal.Ignored(os.Interrupt)
	remove := removeOnSignal(dir)
	during := signal.Ignored(os.Interrupt)
	remove()
	fmt.Printf("ignored before=%v during=%v after=%v\n", before, during, signal.Ignored(os.Interrupt))
}

// A tpbench whose parent ignores SIGINT (a background job of a shell) keeps
// ignoring it while its temporary data file is watched, and after. Run in
// a process of its own: a process cannot ignore SIGINT and undo it.
func TestIgnoredSIGINTStaysIgnored(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", `trap "" INT; exec "$0" -test.run='^$'`, os.Args[0])
	cmd.Env = append(os.Environ(), ignoredSIGINTHelperEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "ignored before=true during=true after=true")
	_, err = os.Stat(dir)
	require.ErrorIs(t, err, os.ErrNotExist, "removed by the returned func")
}
