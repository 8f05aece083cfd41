package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSIGTERMStopsCleanly runs the real binary: data written through it is
// in the file once SIGTERM has made it exit, with status 0.
func TestSIGTERMStopsCleanly(t *testing.T) {
	qemuImg := requireTool(t, "qemu-img", "qemu-utils")
	dir, err := os.MkdirTemp("", "tpnbd")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "tpnbd")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)

	disk, src, sock := filepath.Join(dir, "disk.img"), filepath.Join(dir, "src.img"), filepath.Join(dir, "sock")
	writeImage(t, disk, 8<<20, false)
	writeImage(t, src, 8<<20, true)
	cmd := exec.Command(bin, "-unix", sock, disk)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	// The server prints one line per listener once it accepts.
	lines := bufio.NewScanner(stderr)
	require.True(t, lines.Scan(), "no output from tpnbd")
	require.Contains(t, lines.Text(), "serving")

	uri := "nbd+unix:///?socket=" + sock
	runTool(t, qemuImg, "convert", "-n", "-f", "raw", "-O", "raw", src, uri)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	var rest strings.Builder
	for lines.Scan() {
		rest.WriteString(lines.Text() + "\n")
	}
	require.NoError(t, cmd.Wait(), "tpnbd output: %s", rest.String())
	want, err := os.ReadFile(src)
	require.NoError(t, err)
	got, err := os.ReadFile(disk)
	require.NoError(t, err)
	require.Equal(t, want, got)
}
