package nbd

import (
	"context"
	"fmt"
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
