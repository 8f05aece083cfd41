package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testServer is a Server on a Unix socket (or a TCP port of 127.0.0.1)
// with a test executor and a temporary file as its export.
type testServer struct {
	srv     *Server
	exec    *testExec
	network string // "unix" or "tcp"
	addr    string // Unix socket path, or TCP address
	file    string // exported file

	logMu   sync.Mutex
	logs    []string      // guarded by logMu
	logWake chan struct{} // closed and replaced (under logMu) at each log line
}

// serverConfig adjusts a test server before it starts.
type serverConfig struct {
	size     int64
	readOnly bool
	name     string
	tune     func(*Server)
	listen   func(net.Listener) net.Listener // wraps the listener, if set
	tcp      bool                            // listen on 127.0.0.1 instead of a Unix socket
	path     string                          // export this file instead of a new one of size bytes
}

func startServer(t *testing.T, cfg serverConfig) *testServer {
	t.Helper()
	if cfg.size == 0 {
		cfg.size = 1 << 20
	}
	dir, err := os.MkdirTemp("", "nbd")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	ts := &testServer{network: "unix", addr: filepath.Join(dir, "s"), file: filepath.Join(dir, "disk"), logWake: make(chan struct{})}
	if cfg.tcp {
		ts.network, ts.addr = "tcp", "127.0.0.1:0"
	}
	if cfg.path != "" {
		ts.file = cfg.path
	} else {
		require.NoError(t, os.WriteFile(ts.file, pattern(0, int(cfg.size)), 0o600))
	}

	exp, err := OpenExport(ts.file, cfg.name, cfg.readOnly)
	require.NoError(t, err)
	ts.exec = newTestExec(t, 4)
	ts.srv = &Server{Export: exp, Exec: ts.exec, Logf: ts.logf}
	if cfg.tune != nil {
		cfg.tune(ts.srv)
	}
	l, err := net.Listen(ts.network, ts.addr)
	require.NoError(t, err)
	ts.addr = l.Addr().String()
	if cfg.listen != nil {
		l = cfg.listen(l)
	}
	served := make(chan error, 1)
	go func() { served <- ts.srv.Serve(l) }()
	// Cleanups run last-in first-out: the server stops before the
	// executor registered above.
	t.Cleanup(func() {
		require.NoError(t, ts.srv.Shutdown(context.Background()))
		require.ErrorIs(t, <-served, ErrServerClosed)
		require.NoError(t, exp.Close())
	})
	return ts
}

func (ts *testServer) logf(format string, args ...any) {
	ts.logMu.Lock()
	defer ts.logMu.Unlock()
	ts.logs = append(ts.logs, fmt.Sprintf(format, args...))
	close(ts.logWake)
	ts.logWake = make(chan struct{})
}

// waitLog waits until the server has logged a line containing s.
func (ts *testServer) waitLog(s string) {
	for {
		found, wake := ts.findLog(s)
		if found {
			return
		}
		<-wake
	}
}

// findLog reports whether the server has logged a line containing s, and
// returns a channel closed when it logs its next line.
func (ts *testServer) findLog(s string) (bool, <-chan struct{}) {
	ts.logMu.Lock()
	defer ts.logMu.Unlock()
	for _, l := range ts.logs {
		if strings.Contains(l, s) {
			return true, nil
		}
	}
	return false, ts.logWake
}

// pattern returns n bytes that depend on their offset, seeded by seed.
func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7+i>>9) ^ seed
	}
	return b
}

// client is a minimal NBD client for the tests.
type client struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader

	nextCookie uint64
	readLens   map[uint64]uint32 // outstanding reads by cookie
	dribble    bool              // send writes one byte at a time
}

func dial(t *testing.T, ts *testServer) *client {
	t.Helper()
	nc, err := net.Dial(ts.network, ts.addr)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	require.NoError(t, nc.SetDeadline(time.Now().Add(time.Minute)))
	return &client{t: t, nc: nc, br: bufio.NewReader(nc), readLens: map[uint64]uint32{}}
}

// dialSmallWindow dials a TCP server with a receive buffer of 4 KiB, so
// that replies the client has not read yet stay in the server's send queue
// rather than in the client's receive queue.
func dialSmallWindow(t *testing.T, ts *testServer) *client {
	t.Helper()
	return dialWindow(t, ts, 4096)
}

// dialWindow dials a TCP server with a receive buffer of rcvbuf bytes.
func dialWindow(t *testing.T, ts *testServer, rcvbuf int) *client {
	t.Helper()
	require.Equal(t, "tcp", ts.network)
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
		}); err != nil {
			return err
		}
		return serr
	}}
	nc, err := d.Dial(ts.network, ts.addr)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	require.NoError(t, nc.SetDeadline(time.Now().Add(time.Minute)))
	return &client{t: t, nc: nc, br: bufio.NewReader(nc), readLens: map[uint64]uint32{}}
}

// smallWindowServer starts a TCP server of a 1 MiB export whose replies
// never time out and connects a client to it with dialSmallWindow.
func smallWindowServer(t *testing.T) (*testServer, *client) {
	t.Helper()
	ts := startServer(t, serverConfig{size: 1 << 20, tcp: true, tune: func(s *Server) {
		s.WriteTimeout = time.Hour
	}})
	c := dialSmallWindow(t, ts)
	c.connect("")
	return ts, c
}

func (c *client) u16() uint16 {
	var b [2]byte
	c.full(b[:])
	return binary.BigEndian.Uint16(b[:])
}

func (c *client) u32() uint32 {
	var b [4]byte
	c.full(b[:])
	return binary.BigEndian.Uint32(b[:])
}

func (c *client) u64() uint64 {
	var b [8]byte
	c.full(b[:])
	return binary.BigEndian.Uint64(b[:])
}

func (c *client) full(b []byte) {
	c.t.Helper()
	_, err := io.ReadFull(c.br, b)
	require.NoError(c.t, err)
}

func (c *client) send(b []byte) {
	c.t.Helper()
	if c.dribble {
		for i := range b {
			_, err := c.nc.Write(b[i : i+1])
			require.NoError(c.t, err)
		}
		return
	}
	_, err := c.nc.Write(b)
	require.NoError(c.t, err)
}

// greet reads the server's greeting and answers with clientFlags.
func (c *client) greet(clientFlags uint32) {
	c.t.Helper()
	require.Equal(c.t, uint64(magicNBD), c.u64())
	require.Equal(c.t, uint64(magicOption), c.u64())
	require.Equal(c.t, uint16(hsFlagFixedNewstyle|hsFlagNoZeroes), c.u16())
	c.send(binary.BigEndian.AppendUint32(nil, clientFlags))
}

// option sends one option with its data.
func (c *client) option(opt uint32, data []byte) {
	c.t.Helper()
	b := binary.BigEndian.AppendUint64(nil, magicOption)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	c.send(append(b, data...))
}

// optReply reads one option reply, checking that it answers opt.
func (c *client) optReply(opt uint32) (typ uint32, data []byte) {
	c.t.Helper()
	require.Equal(c.t, uint64(magicOptionReply), c.u64())
	require.Equal(c.t, opt, c.u32())
	typ = c.u32()
	data = make([]byte, c.u32())
	c.full(data)
	return typ, data
}

// goData encodes NBD_OPT_INFO and NBD_OPT_GO data.
func goData(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

// exportInfo is what NBD_OPT_INFO or NBD_OPT_GO told the client.
type exportInfo struct {
	size                    uint64
	flags                   uint16
	name, description       string
	minBS, prefBS, maxBS    uint32
	sawExport, sawBlockSize bool
}

// infoReplies reads NBD_REP_INFO replies up to the final reply, which it
// returns.
func (c *client) infoReplies(opt uint32) (exportInfo, uint32, []byte) {
	c.t.Helper()
	var info exportInfo
	for {
		typ, data := c.optReply(opt)
		if typ != repInfo {
			return info, typ, data
		}
		require.GreaterOrEqual(c.t, len(data), 2)
		switch binary.BigEndian.Uint16(data) {
		case infoExport:
			require.Len(c.t, data, 12)
			info.sawExport = true
			info.size = binary.BigEndian.Uint64(data[2:])
			info.flags = binary.BigEndian.Uint16(data[10:])
		case infoName:
			info.name = string(data[2:])
		case infoDescription:
			info.description = string(data[2:])
		case infoBlockSize:
			require.Len(c.t, data, 14)
			info.sawBlockSize = true
			info.minBS = binary.BigEndian.Uint32(data[2:])
			info.prefBS = binary.BigEndian.Uint32(data[6:])
			info.maxBS = binary.BigEndian.Uint32(data[10:])
		}
	}
}

// connect negotiates with NBD_OPT_GO and returns what the server said.
func (c *client) connect(name string) exportInfo {
	c.t.Helper()
	c.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	c.option(optGo, goData(name))
	info, typ, _ := c.infoReplies(optGo)
	require.Equal(c.t, uint32(repAck), typ)
	require.True(c.t, info.sawExport)
	return info
}

// request sends one transmission request and returns its cookie.
func (c *client) request(typ, flags uint16, offset uint64, length uint32, payload []byte) uint64 {
	c.t.Helper()
	b, cookie := c.appendRequest(nil, typ, flags, offset, length, payload)
	c.send(b)
	return cookie
}

// appendRequest appends one transmission request to b, to be sent later
// (several in one write, pipelined), and returns b and the request's cookie.
func (c *client) appendRequest(b []byte, typ, flags uint16, offset uint64, length uint32, payload []byte) ([]byte, uint64) {
	c.nextCookie++
	cookie := c.nextCookie
	b = binary.BigEndian.AppendUint32(b, magicRequest)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, cookie)
	b = binary.BigEndian.AppendUint64(b, offset)
	b = binary.BigEndian.AppendUint32(b, length)
	if typ == cmdRead {
		c.readLens[cookie] = length
	}
	return append(b, payload...), cookie
}

// reply reads one simple reply; a successful read reply carries data.
func (c *client) reply() (cookie uint64, errno uint32, data []byte) {
	c.t.Helper()
	require.Equal(c.t, uint32(magicSimpleReply), c.u32())
	errno = c.u32()
	cookie = c.u64()
	n, isRead := c.readLens[cookie]
	delete(c.readLens, cookie)
	if isRead && errno == 0 {
		data = make([]byte, n)
		c.full(data)
	}
	return cookie, errno, data
}

// do sends one request and waits for its reply.
func (c *client) do(typ, flags uint16, offset uint64, length uint32, payload []byte) (uint32, []byte) {
	c.t.Helper()
	want := c.request(typ, flags, offset, length, payload)
	cookie, errno, data := c.reply()
	require.Equal(c.t, want, cookie)
	return errno, data
}

func (c *client) write(offset uint64, data []byte, flags uint16) uint32 {
	c.t.Helper()
	errno, _ := c.do(cmdWrite, flags, offset, uint32(len(data)), data)
	return errno
}

func (c *client) read(offset uint64, length uint32) (uint32, []byte) {
	c.t.Helper()
	return c.do(cmdRead, 0, offset, length, nil)
}

// expectEOF checks that the server closes the connection without sending
// anything more.
func (c *client) expectEOF() {
	c.t.Helper()
	_, err := c.br.ReadByte()
	require.True(c.t, errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err), "want EOF, got %v", err)
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && !oe.Timeout()
}
