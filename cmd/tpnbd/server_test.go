package main

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchio/threadpool/internal/cmdtest"
	"github.com/stretchr/testify/require"
)

// requireClientsEnv, set to 1 (.ci/run sets it), turns a missing client
// tool into a test failure instead of a skip, so that CI cannot skip the
// tests that drive real clients without saying so.
const requireClientsEnv = "TPNBD_REQUIRE_CLIENTS"

// requireTool returns the path of a client tool. When it is not installed
// the test is skipped with one line naming the package to install, or
// fails under TPNBD_REQUIRE_CLIENTS=1.
func requireTool(t *testing.T, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg, fail := toolMissing(name, debianPackage)
	if fail {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// toolMissing returns the one-line message for a missing tool and whether
// it must fail the test rather than skip it.
func toolMissing(name, debianPackage string) (msg string, fail bool) {
	msg = name + " not found: install the Debian package " + debianPackage + " (cmd/tpnbd/ci-deps.sh installs all of them)"
	if os.Getenv(requireClientsEnv) == "1" {
		return msg + "; failing because " + requireClientsEnv + "=1", true
	}
	return msg, false
}

// tpnbd is a server started in-process by startTpnbd.
type tpnbd struct {
	file string // the exported file
	sock string // its Unix socket
	uri  string // NBD URI of the export
	// tcpURI is the export's URI over TCP, when started with -tcp.
	tcpURI string
}

// startTpnbd serves a new file of size random bytes (or of zeroes) on a
// Unix socket until the test ends, then shuts it down as SIGTERM would
// and checks that it exits cleanly.
func startTpnbd(t *testing.T, size int64, random bool, extra ...string) *tpnbd {
	t.Helper()
	dir, err := os.MkdirTemp("", "tpnbd")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &tpnbd{file: filepath.Join(dir, "disk.img"), sock: filepath.Join(dir, "sock")}
	writeImage(t, s.file, size, random)

	args := append([]string{"-q", "-name", "disk", "-unix", s.sock}, extra...)
	cfg, err := parseFlags(append(args, s.file), io.Discard)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan []net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, io.Discard, ready) }()
	var addrs []net.Addr
	select {
	case addrs = <-ready:
	case err := <-done:
		cancel()
		require.NoError(t, err)
	}
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	s.uri = "nbd+unix:///disk?socket=" + s.sock
	for _, a := range addrs {
		if a.Network() == "tcp" {
			s.tcpURI = "nbd://" + a.String() + "/disk"
		}
	}
	return s
}

// writeImage creates a file of size bytes, random or zero.
func writeImage(t *testing.T, path string, size int64, random bool) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	if random {
		_, err = io.CopyN(f, rand.Reader, size)
	} else {
		err = f.Truncate(size)
	}
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

// runTool runs a client tool in a temporary directory and returns its
// output, failing the test with that output if it exits non-zero.
func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = t.TempDir() // for any state file a tool leaves behind
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %s:\n%s", name, strings.Join(args, " "), out)
	return string(out)
}

func TestMissingToolSkipsUnlessRequired(t *testing.T) {
	t.Setenv(requireClientsEnv, "")
	msg, fail := toolMissing("nbdfoo", "foo-utils")
	require.False(t, fail)
	require.Contains(t, msg, "nbdfoo not found")
	require.Contains(t, msg, "foo-utils")
	require.Contains(t, msg, "cmd/tpnbd/ci-deps.sh")
	require.NotContains(t, msg, "\n")

	t.Setenv(requireClientsEnv, "1")
	msg, fail = toolMissing("nbdfoo", "foo-utils")
	require.True(t, fail)
	require.Contains(t, msg, requireClientsEnv)
}

// Flag values that cannot mean anything are refused: a -procs below 0 or
// above 1024, a -shutdown-wait that would give up before a shutdown
// begins, worker limits the pool cannot hold, a -max-conns below 0, and an
// export name over the protocol's 4096 bytes, as bad flags (exit status 2)
// before any file is opened. Go keeps GOMAXPROCS in 32 bits: a -procs of 2^32+1 ran the
// server with GOMAXPROCS 1.
func TestFlagsRefuseNonsense(t *testing.T) {
	for _, args := range [][]string{
		{"-procs", "-1"},
		{"-procs", "1025"},
		{"-procs", "4294967297"},
		{"-shutdown-wait", "0"},
		{"-shutdown-wait", "-1s"},
		{"-workers", "0"},
		{"-workers", "-1"},
		{"-min-workers", "-1"},
		{"-min-workers", "65"},
		{"-min-workers", "5", "-workers", "4"},
		{"-max-conns", "-1"},
	} {
		var stderr strings.Builder
		_, err := parseFlags(append(args, "disk.img"), &stderr)
		require.Error(t, err, "%v", args)
		require.Contains(t, stderr.String(), args[0], "%v", args)
	}
	var stderr strings.Builder
	_, err := parseFlags([]string{"-name", strings.Repeat("x", 4097), "disk.img"}, &stderr)
	require.Error(t, err, "-name of 4097 bytes")
	require.Contains(t, stderr.String(), "-name")
	_, err = parseFlags([]string{"-name", strings.Repeat("x", 4096), "disk.img"}, io.Discard)
	require.NoError(t, err, "-name of 4096 bytes")
	stderr.Reset()
	_, err = parseFlags([]string{"-procs", "4294967297", "disk.img"}, &stderr)
	require.Error(t, err, "-procs 4294967297")
	require.Contains(t, stderr.String(), "to 1024")
	cfg, err := parseFlags([]string{"-procs", "1024", "disk.img"}, io.Discard)
	require.NoError(t, err, "-procs 1024")
	require.Equal(t, 1024, cfg.procs)
}

// -h is no bad flag: the real binary prints the usage and exits 0, as the
// flag package's own programs do, while a bad flag exits 2; neither serves.
func TestHelpExitsZero(t *testing.T) {
	bin := cmdtest.Build(t, t.TempDir(), "tpnbd")
	for _, h := range []string{"-h", "-help", "--help"} {
		out, err := exec.Command(bin, h).CombinedOutput()
		require.NoError(t, err, "%s: %s", h, out)
		require.Contains(t, string(out), "usage: tpnbd", h)
		require.Contains(t, string(out), "-shutdown-wait", h)
		require.NotContains(t, string(out), "serving", h)
	}
	out, err := exec.Command(bin, "-no-such-flag", "disk.img").CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "%s", out)
	require.Equal(t, 2, exit.ExitCode(), "%s", out)
}

// -unix replaces a stale socket left by an earlier run, but not one a
// running server still listens on: that one keeps its path, and the new
// server fails to start instead of taking the path over (and unlinking it
// when it exits, which would leave the running server unreachable).
func TestUnixReplacesOnlyStaleSocket(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "disk.img")
	writeImage(t, file, 1<<20, false)
	sock := filepath.Join(dir, "sock")
	cfg, err := parseFlags([]string{"-q", "-unix", sock, file}, io.Discard)
	require.NoError(t, err)
	// start runs the server until it has opened its listeners, then
	// shuts it down at once.
	start := func() error {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ready := make(chan []net.Addr, 1)
		done := make(chan error, 1)
		go func() { done <- run(ctx, cfg, io.Discard, ready) }()
		select {
		case <-ready:
			cancel()
			return <-done
		case err := <-done:
			return err
		}
	}

	stale, err := net.Listen("unix", sock)
	require.NoError(t, err)
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, stale.Close())
	require.NoError(t, start())

	live, err := net.Listen("unix", sock)
	require.NoError(t, err)
	defer live.Close()
	err = start()
	require.ErrorContains(t, err, sock)
	c, err := net.Dial("unix", sock)
	require.NoError(t, err, "the running server's socket is gone")
	require.NoError(t, c.Close())
}

// Two servers started at once on one stale socket path: the second one's
// whole start happens while the first has found the socket stale and not
// yet replaced it (beforeStaleRemove). Only one of them may listen there;
// the other fails, rather than both unlinking the stale socket in turn
// and the second taking the path from the first, which then serves on a
// socket no client can reach.
func TestUnixStaleSocketTakenOnce(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "sock")
	stale, err := net.Listen("unix", sock)
	require.NoError(t, err)
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, stale.Close())

	var second net.Listener
	var secondErr error
	beforeStaleRemove = func() {
		beforeStaleRemove = nil
		second, secondErr = listenUnix(sock)
	}
	defer func() { beforeStaleRemove = nil }()
	first, firstErr := listenUnix(sock)
	for _, l := range []net.Listener{first, second} {
		if l != nil {
			defer l.Close()
		}
	}
	require.True(t, (firstErr == nil) != (secondErr == nil), "exactly one listens: first %v, second %v", firstErr, secondErr)
	winner, loserErr := first, secondErr
	if firstErr != nil {
		winner, loserErr = second, firstErr
	}
	require.ErrorContains(t, loserErr, sock)
	go func() {
		if c, err := winner.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("unix", sock)
	require.NoError(t, err, "the listener's socket is gone")
	_, err = c.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "another listener than the winner took the path")
	require.NoError(t, c.Close())
}

// -max-conns reaches the server: with one connection open, the next is
// closed before the server's greeting. The default bounds them at 128.
func TestMaxConnsFlag(t *testing.T) {
	cfg, err := parseFlags([]string{"disk.img"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 128, cfg.maxConns)

	s := startTpnbd(t, 1<<20, false, "-max-conns", "1")
	greeting := make([]byte, 8)
	first, err := net.Dial("unix", s.sock)
	require.NoError(t, err)
	defer first.Close()
	_, err = io.ReadFull(first, greeting)
	require.NoError(t, err)
	require.Equal(t, "NBDMAGIC", string(greeting))
	second, err := net.Dial("unix", s.sock)
	require.NoError(t, err)
	defer second.Close()
	n, err := second.Read(greeting)
	require.Zero(t, n)
	require.ErrorIs(t, err, io.EOF)
}
