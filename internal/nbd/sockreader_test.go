package nbd

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTCPTransmission runs requests over TCP, where the connection reads
// them with raw reads of the socket (sockReader): small and large writes
// and reads (a 4 MiB payload takes many reads), requests that arrive one
// byte at a time, pipelined requests, with lone requests served inline and
// not.
func TestTCPTransmission(t *testing.T) {
	eachInline(t, func(t *testing.T, inline bool) {
		ts := startServer(t, serverConfig{size: 4 << 20, tcp: true, tune: func(s *Server) { s.Inline = inline }})
		c := dial(t, ts)
		c.connect("")
		errno, _ := c.read(0, 1)
		require.Zero(t, errno)
		require.Equal(t, 1, rawReaders(ts), "the connection reads its socket raw")
		requireRoundTrips(t, c)

		c.dribble = true
		want := pattern(42, 5000)
		require.Zero(t, c.write(12345, want, 0))
		errno, got := c.read(12345, 5000)
		require.Zero(t, errno)
		require.Equal(t, want, got)
		c.dribble = false

		cookies := map[uint64]uint64{}
		for i := range 32 {
			off := uint64(i) * 8192
			cookies[c.request(cmdRead, 0, off, 8192, nil)] = off
		}
		file := pattern(6, 4<<20) // requireRoundTrips's last write
		copy(file[12345:], want)
		for range 32 {
			cookie, errno, data := c.reply()
			require.Zero(t, errno)
			off, ok := cookies[cookie]
			require.True(t, ok)
			delete(cookies, cookie)
			require.Equal(t, file[off:off+8192], data)
		}
	})
}

// TestUnixSocketReadsThroughNetConn checks that a connection on a Unix
// socket keeps net.Conn's reads (see sockReader.useRaw).
func TestUnixSocketReadsThroughNetConn(t *testing.T) {
	ts := startServer(t, serverConfig{})
	c := dial(t, ts)
	c.connect("")
	errno, _ := c.read(0, 4096)
	require.Zero(t, errno)
	require.Zero(t, rawReaders(ts))
}

// rawReaders counts the server's connections that read their socket raw.
// Call it once a request was answered: the reader is chosen before the
// connection enters transmission, under the server's lock.
func rawReaders(ts *testServer) int {
	ts.srv.mu.Lock()
	defer ts.srv.mu.Unlock()
	n := 0
	for c := range ts.srv.conns {
		if c.src.raw != nil {
			n++
		}
	}
	return n
}

// TestTCPClientGoneEndsConnection checks that a TCP client that closes its
// end ends the connection as an ordinary end (the raw read sees end of
// file), with nothing logged, whether its last request went through the
// Executor or was answered inline.
func TestTCPClientGoneEndsConnection(t *testing.T) {
	eachInline(t, func(t *testing.T, inline bool) {
		ts, c := tcpAfterWrite(t, inline)
		require.NoError(t, c.nc.Close())
		require.NoError(t, ts.srv.Shutdown(context.Background()))
		ts.logMu.Lock()
		defer ts.logMu.Unlock()
		for _, l := range ts.logs {
			require.False(t, strings.Contains(l, "reading request"), "logged %q", l)
		}
	})
}

// TestTCPShutdownStopsIdleConnection checks that Shutdown stops a TCP
// connection whose reader waits for a request in a raw read: the read's
// deadline ends the wait, whether the last request went through the
// Executor or was answered inline.
func TestTCPShutdownStopsIdleConnection(t *testing.T) {
	eachInline(t, func(t *testing.T, inline bool) {
		ts, c := tcpAfterWrite(t, inline)
		require.NoError(t, ts.srv.Shutdown(context.Background()))
		c.expectEOF()
	})
}

// eachInline runs f as two subtests, without and with Server.Inline.
func eachInline(t *testing.T, f func(t *testing.T, inline bool)) {
	for _, inline := range []bool{false, true} {
		t.Run(fmt.Sprintf("inline=%v", inline), func(t *testing.T) { f(t, inline) })
	}
}

// tcpAfterWrite starts a TCP server, with or without Server.Inline, and
// connects a client that has written one block and had its reply.
func tcpAfterWrite(t *testing.T, inline bool) (*testServer, *client) {
	ts := startServer(t, serverConfig{tcp: true, tune: func(s *Server) { s.Inline = inline }})
	c := dial(t, ts)
	c.connect("")
	require.Zero(t, c.write(0, pattern(1, 4096), 0))
	return ts, c
}

// TestLockstepNeedsLoneRequestsWithNothingInFlight checks when a connection
// counts as lockstep (conn.lockstep): after lockstepRun lone requests in a
// row, each read when no other was buffered and answered before the next;
// not after a request that came with another, nor with a request in
// flight, and the run starts again after either.
func TestLockstepNeedsLoneRequestsWithNothingInFlight(t *testing.T) {
	c := lockstepConn(t)
	lone := func() bool {
		c.sinceWait = 1
		return c.lockstep()
	}
	for i := 1; i < lockstepRun; i++ {
		require.False(t, lone(), "after %d lone requests", i)
	}
	require.True(t, lone())
	require.True(t, lone())

	c.sinceWait = 2 // two requests came together
	require.False(t, c.lockstep())
	for i := 1; i < lockstepRun; i++ {
		require.False(t, lone(), "after %d lone requests, following two together", i)
	}
	require.True(t, lone())

	ok, _ := c.budget.acquire(4096) // a request in flight
	require.True(t, ok)
	require.False(t, lone())
	c.budget.release(grant{reqs: 1, bytes: 4096})
	for i := 1; i < lockstepRun; i++ {
		require.False(t, lone(), "after %d lone requests, following one in flight", i)
	}
	require.True(t, lone())
}

// TestLockstepNeedsTheOnlyConnectionAndTwoProcessors checks that a lockstep
// client's reader does not wait while another connection is in
// transmission, nor on a single processor.
func TestLockstepNeedsTheOnlyConnectionAndTwoProcessors(t *testing.T) {
	c := lockstepConn(t)
	for range lockstepRun - 1 {
		c.sinceWait = 1
		require.False(t, c.lockstep())
	}
	c.sinceWait = 1
	require.True(t, c.lockstep())

	c.srv.transmitting.Store(2)
	c.sinceWait = 1
	require.False(t, c.lockstep(), "another connection is in transmission")
	c.srv.transmitting.Store(1)
	c.sinceWait = 1
	require.True(t, c.lockstep())

	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	c.sinceWait = 1
	require.False(t, c.lockstep(), "one processor")
}

// lockstepConn returns a connection, with its budget, that is its server's
// only one in transmission, on at least two processors.
func lockstepConn(t *testing.T) *conn {
	if runtime.GOMAXPROCS(0) < 2 {
		old := runtime.GOMAXPROCS(2)
		t.Cleanup(func() { runtime.GOMAXPROCS(old) })
	}
	c := &conn{srv: &Server{}}
	c.srv.transmitting.Store(1)
	c.budget.init(16, 1<<20)
	return c
}

// TestTCPShutdownStopsLockstepConnection checks that Shutdown stops a TCP
// connection whose client sends one request at a time, whose reader waits
// for the next one as for a lockstep client, and that the lone requests
// before it were answered right, inline or not.
func TestTCPShutdownStopsLockstepConnection(t *testing.T) {
	eachInline(t, func(t *testing.T, inline bool) {
		ts := startServer(t, serverConfig{tcp: true, tune: func(s *Server) { s.Inline = inline }})
		c := dial(t, ts)
		c.connect("")
		for i := range 3 * lockstepRun {
			want := pattern(byte(i), 4096)
			require.Zero(t, c.write(uint64(i)*4096, want, 0))
			errno, got := c.read(uint64(i)*4096, 4096)
			require.Zero(t, errno)
			require.Equal(t, want, got)
		}
		require.NoError(t, ts.srv.Shutdown(context.Background()))
		c.expectEOF()
	})
}

// tcpPair returns the two ends of a TCP connection over loopback, closed
// when the test ends.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	b, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	a, err := ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { a.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// socketFd returns c's descriptor, which stays valid while c is open.
func socketFd(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	fd := -1
	require.NoError(t, rc.Control(func(s uintptr) { fd = int(s) }))
	return fd
}
