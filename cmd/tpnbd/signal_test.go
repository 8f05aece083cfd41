package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batchio/threadpool/internal/cmdtest"
	"github.com/batchio/threadpool/internal/nbd/testcerts"
	"github.com/stretchr/testify/require"
)

// startBinary builds tpnbd into dir and runs it with args until it serves
// (it prints one line per listener once it accepts); it returns the
// process and its standard error past that line. The process is killed
// when the test ends, if it has not exited.
func startBinary(t *testing.T, dir string, args ...string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(cmdtest.Build(t, dir, "tpnbd"), args...)
	lines := bufio.NewScanner(cmdtest.Start(t, cmd))
	require.True(t, lines.Scan(), "no output from tpnbd")
	require.Contains(t, lines.Text(), "serving")
	return cmd, lines
}

// TestSIGTERMStopsCleanly runs the real binary: data written through it is
// in the file once SIGTERM has made it exit, with status 0.
func TestSIGTERMStopsCleanly(t *testing.T) {
	qemuImg := requireTool(t, "qemu-img", "qemu-utils")
	dir, err := os.MkdirTemp("", "tpnbd")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	disk, src, sock := filepath.Join(dir, "disk.img"), filepath.Join(dir, "src.img"), filepath.Join(dir, "sock")
	writeImage(t, disk, 8<<20, false)
	writeImage(t, src, 8<<20, true)
	cmd, lines := startBinary(t, dir, "-unix", sock, disk)

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

// TestSecondSignalEndsShutdown runs the real binary with a client that
// does not read its replies, so that a SIGTERM'd shutdown waits for it
// (-shutdown-wait 1h, each blocked send bounded by the 30 s write timeout).
// A second SIGTERM (or Ctrl-C) ends the process at once. The test sends it
// again until the process ends (at most 30 s): the first signal's handler
// gives the signals back to their default action just after it begins the
// shutdown.
func TestSecondSignalEndsShutdown(t *testing.T) {
	dir := t.TempDir()
	disk, sock := filepath.Join(dir, "disk.img"), filepath.Join(dir, "sock")
	writeImage(t, disk, 64<<20, true)
	cmd, lines := startBinary(t, dir, "-shutdown-wait", "1h", "-unix", sock, disk)
	exited := make(chan struct{}) // closed once cmd.Wait has returned
	go func() {
		for lines.Scan() {
		}
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() { // before startBinary's, which then finds it ended
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})

	// A client that sends 16 reads of 4 MiB and reads none of the replies.
	stuck := nbdConnect(t, sock)
	for i := range 16 {
		var req [28]byte
		binary.BigEndian.PutUint32(req[0:], 0x25609513)
		binary.BigEndian.PutUint64(req[8:], uint64(i))
		binary.BigEndian.PutUint64(req[16:], uint64(i)*(4<<20))
		binary.BigEndian.PutUint32(req[24:], 4<<20)
		_, err := stuck.Write(req[:])
		require.NoError(t, err)
	}
	// A client still negotiating, which sends no option: the server
	// closes it once Shutdown has begun (after waiting a second for an
	// option), which tells the test the first signal was handled.
	watch, err := net.Dial("unix", sock)
	require.NoError(t, err)
	defer watch.Close()
	_, err = io.ReadFull(watch, make([]byte, 18))
	require.NoError(t, err)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	_, _ = io.Copy(io.Discard, watch) // ends when the server closes it
	select {
	case <-exited:
		t.Fatalf("exited before the second signal (%v): the client was not stuck", cmd.ProcessState)
	default:
	}

	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		_ = cmd.Process.Signal(syscall.SIGTERM) // the user presses Ctrl-C again
		select {
		case <-exited:
			// Killed by the signal: a shutdown that ended by itself (the
			// write timeout drops the stuck client after 30 s, as long as
			// this wait) exits 0 instead.
			ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
			require.True(t, ok, "%v", cmd.ProcessState)
			require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGTERM,
				"tpnbd ended its shutdown (%v) instead of dying of the second SIGTERM", cmd.ProcessState)
			return
		case <-deadline:
			t.Fatal("a second SIGTERM did not end tpnbd within 30 s while its shutdown waited for a stuck client")
		case <-tick.C:
		}
	}
}

// nbdConnect negotiates with NBD_OPT_EXPORT_NAME for the default export and
// returns the connection in transmission.
func nbdConnect(t *testing.T, sock string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	greeting := make([]byte, 18)
	_, err = io.ReadFull(c, greeting)
	require.NoError(t, err)
	require.Equal(t, "NBDMAGIC", string(greeting[:8]))
	var hello [4 + 16]byte
	binary.BigEndian.PutUint32(hello[0:], 3) // FIXED_NEWSTYLE | NO_ZEROES
	binary.BigEndian.PutUint64(hello[4:], 0x49484156454F5054)
	binary.BigEndian.PutUint32(hello[12:], 1) // NBD_OPT_EXPORT_NAME, empty name
	_, err = c.Write(hello[:])
	require.NoError(t, err)
	_, err = io.ReadFull(c, make([]byte, 10)) // size and flags
	require.NoError(t, err)
	return c
}

// TestStopDuringStartDoesNotServe stops the server (as SIGINT or SIGTERM
// does, by ending run's context) while it is still starting: here while it
// waits to read its TLS client CA file, a FIFO. Once that step is done it
// returns nil, as a stopped server does, without listening: it neither
// announces addresses nor creates its socket.
func TestStopDuringStartDoesNotServe(t *testing.T) {
	dir := t.TempDir()
	disk, sock, fifo := filepath.Join(dir, "disk.img"), filepath.Join(dir, "sock"), filepath.Join(dir, "ca.pem")
	writeImage(t, disk, 1<<20, false)
	ca := testcerts.NewCA(t, "tpnbd test CA")
	server := ca.Server(t, "localhost")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	cfg, err := parseFlags([]string{"-q", "-unix", sock, "-tls", "on",
		"-tls-cert", testcerts.WriteFile(t, dir, "cert.pem", server.CertPEM),
		"-tls-key", testcerts.WriteFile(t, dir, "key.pem", server.KeyPEM),
		"-tls-client-ca", fifo, disk}, io.Discard)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan []net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, io.Discard, ready) }()
	opened := make(chan *os.File, 1)
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0) // until run opens it to read
		if err != nil {
			panic(err)
		}
		opened <- f
	}()
	var w *os.File
	select {
	case w = <-opened:
	case err := <-done:
		if r, err := os.OpenFile(fifo, os.O_RDONLY, 0); err == nil { // free the writer
			(<-opened).Close()
			r.Close()
		}
		t.Fatalf("run returned before it read the CA file: %v", err)
	}
	cancel() // the signal, while run waits for the file
	_, err = w.Write(ca.PEM)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	require.NoError(t, <-done)
	require.Empty(t, ready, "run served after it was stopped")
	require.NoFileExists(t, sock)
}
