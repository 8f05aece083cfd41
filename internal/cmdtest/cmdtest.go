// Package cmdtest builds and runs the project's commands in their own
// tests, for the tests that need the real binary (signals, exit statuses).
// It is meant for tests only.
package cmdtest

import (
	"bytes"
	"io"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// Build builds the command in the current directory (the package under
// test) into dir under name, and returns the binary's path.
func Build(t testing.TB, dir, name string) string {
	t.Helper()
	bin := filepath.Join(dir, name)
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

// Start starts cmd and returns its standard error, which the caller may
// close to make the process's writes to it fail (a broken pipe). When the
// test ends, a process that has not been waited for is killed and reaped.
func Start(t testing.TB, cmd *exec.Cmd) io.ReadCloser {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return stderr
}

// Run runs cmd to its end and returns its exit status, its standard output
// and its standard error; a command that cannot start fails the test.
func Run(t testing.TB, cmd *exec.Cmd) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit)
		code = exit.ExitCode()
	}
	return code, o.String(), e.String()
}
