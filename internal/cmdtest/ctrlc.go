package cmdtest

import (
	"bytes"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// CtrlC runs cmd in a process group of its own, waits until the file
// started exists (a step of cmd writes it, by a rename, once it is where the
// test wants it interrupted; at most wait), sends SIGINT to the group as a
// terminal's Ctrl-C does, and requires that cmd then ended by that signal.
// It returns cmd's standard output and error and what started holds. The
// test is skipped where SIGINT is ignored (and so, in cmd, untrappable).
func CtrlC(t testing.TB, cmd *exec.Cmd, started string, wait time.Duration) (stdout, stderr, content string) {
	t.Helper()
	if signal.Ignored(os.Interrupt) {
		t.Skip("SIGINT is ignored here, and so in the command, which cannot trap it")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	require.NoError(t, cmd.Start())
	require.Eventually(t, func() bool { _, err := os.Stat(started); return err == nil }, wait, 10*time.Millisecond)
	b, err := os.ReadFile(started)
	require.NoError(t, err)
	require.NoError(t, syscall.Kill(-cmd.Process.Pid, syscall.SIGINT))

	err = cmd.Wait()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, e.String())
	status := exit.Sys().(syscall.WaitStatus)
	require.True(t, status.Signaled(), "exited %d instead of ending by SIGINT: %s", exit.ExitCode(), e.String())
	require.Equal(t, syscall.SIGINT, status.Signal())
	return o.String(), e.String(), string(b)
}
