// Package cmdtest builds and runs the project's commands in their own
// tests, for the tests that need the real binary (signals, exit statuses).
// It is meant for tests only.
package cmdtest

import (
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
