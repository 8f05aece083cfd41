package nbd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batchio/threadpool/internal/nbd/testcerts"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// tlsCerts holds what the TLS tests need: a CA, the server's certificate
// and a client's, both signed by it, and a client certificate signed by an
// unrelated CA.
type tlsCerts struct {
	ca                       *testcerts.CA
	server, client, stranger *testcerts.Leaf
}

func newTLSCerts(t *testing.T) *tlsCerts {
	ca := testcerts.NewCA(t, "tpnbd test CA")
	return &tlsCerts{
		ca:       ca,
		server:   ca.Server(t, "localhost", "127.0.0.1"),
		client:   ca.Client(t, "client"),
		stranger: testcerts.NewCA(t, "unrelated CA").Client(t, "stranger"),
	}
}

// tlsServer returns a serverConfig tune that turns TLS to mode; with
// verify, clients must present a certificate signed by the CA.
func (tc *tlsCerts) tlsServer(mode TLSMode, verify bool) func(*Server) {
	return func(s *Server) {
		s.TLS = mode
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{tc.server.TLS}}
		if verify {
			s.TLSConfig.ClientAuth = tls.RequireAndVerifyClientCert
			s.TLSConfig.ClientCAs = tc.ca.Pool()
		}
	}
}

// clientConfig returns a client configuration that trusts the CA and
// presents cert, if not nil, whichever CAs the server asks for.
func (tc *tlsCerts) clientConfig(cert *testcerts.Leaf) *tls.Config {
	cfg := &tls.Config{RootCAs: tc.ca.Pool(), ServerName: "localhost"}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &cert.TLS, nil
		}
	}
	return cfg
}

// dialFixed connects and greets the server as a fixed-newstyle client.
func dialFixed(t *testing.T, ts *testServer) *client {
	t.Helper()
	c := dial(t, ts)
	c.greet(clientFlagFixedNewstyle)
	return c
}

// ask sends one option and returns the type of the server's one reply.
func (c *client) ask(opt uint32, data []byte) uint32 {
	c.t.Helper()
	c.option(opt, data)
	typ, _ := c.optReply(opt)
	return typ
}

// requestTLS sends NBD_OPT_STARTTLS and expects NBD_REP_ACK, with nothing
// after it; the TLS handshake is the client's to start.
func (c *client) requestTLS() {
	c.t.Helper()
	require.Equal(c.t, uint32(repAck), c.ask(optStartTLS, nil))
	require.Zero(c.t, c.br.Buffered(), "nothing may follow the reply in plain text")
}

// startTLS asks for TLS and runs the handshake; from then on the client
// speaks over TLS. It returns the handshake's error.
func (c *client) startTLS(cfg *tls.Config) error {
	c.t.Helper()
	c.requestTLS()
	tc := tls.Client(c.nc, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	c.nc = tc
	c.br = bufio.NewReader(tc)
	return nil
}

func TestParseTLSMode(t *testing.T) {
	for _, m := range []TLSMode{TLSOff, TLSOn, TLSRequire} {
		got, err := ParseTLSMode(m.String())
		require.NoError(t, err)
		require.Equal(t, m, got)
	}
	for _, s := range []string{"", "yes", "Require", "true"} {
		_, err := ParseTLSMode(s)
		require.Error(t, err, "%q", s)
	}
	require.Equal(t, "TLSMode(7)", TLSMode(7).String())
}

func TestServeRefusesUnusableTLS(t *testing.T) {
	certs := newTLSCerts(t)
	for _, s := range []*Server{
		{TLS: TLSOn},
		{TLS: TLSRequire, TLSConfig: &tls.Config{}},
		{TLS: TLSMode(3), TLSConfig: &tls.Config{Certificates: []tls.Certificate{certs.server.TLS}}},
	} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		require.ErrorContains(t, s.Serve(l), "TLS")
		_, err = net.Dial("tcp", l.Addr().String())
		require.Error(t, err, "the listener is closed")
	}
}

func TestStartTLSThenTransmission(t *testing.T) {
	certs := newTLSCerts(t)
	ts := startServer(t, serverConfig{size: 4 << 20, name: "disk", tune: certs.tlsServer(TLSOn, false)})
	c := dialFixed(t, ts)
	require.NoError(t, c.startTLS(certs.clientConfig(nil)))
	// The export is listed over TLS.
	c.option(optList, nil)
	for _, want := range []uint32{repServer, repAck} {
		typ, _ := c.optReply(optList)
		require.Equal(t, want, typ)
	}
	info := c.connect2()
	require.Equal(t, uint64(4<<20), info.size)
	for i, n := range []int{1, 4096, 65536 + 3, 1 << 20} {
		want := pattern(byte(i+1), n)
		require.Zero(t, c.write(uint64(i)<<20, want, cmdFlagFUA))
		errno, got := c.read(uint64(i)<<20, uint32(n))
		require.Zero(t, errno)
		require.True(t, bytes.Equal(want, got), "size %d", n)
	}
	// With TLS optional, a client may stay in plain text.
	plain := dial(t, ts)
	plain.connect("disk")
	errno, got := plain.read(0, 1)
	require.Zero(t, errno)
	require.Equal(t, pattern(1, 1), got)
}

func TestTLSOffRefusesStartTLS(t *testing.T) {
	c := dialFixed(t, startServer(t, serverConfig{}))
	require.Equal(t, uint32(repErrPolicy), c.ask(optStartTLS, nil))
	// Still negotiating, in plain text.
	c.connect2()
}

func TestTLSRequire(t *testing.T) {
	certs := newTLSCerts(t)
	ts := startServer(t, serverConfig{size: 12345, name: "secret-disk", tune: certs.tlsServer(TLSRequire, false)})
	ts.srv.Export.Description = "secret description"
	c := dialFixed(t, ts)
	for _, tc := range []struct {
		opt  uint32
		data []byte
	}{
		{optList, nil},
		{optInfo, goData("secret-disk", infoName, infoDescription)},
		{optGo, goData("")},
		{optStructuredReply, nil},
		{optListMetaContext, metaData("secret-disk", baseAllocation)},
		{optSetMetaContext, metaData("secret-disk", baseAllocation)},
		{999, []byte("x")},
		{optGo, make([]byte, maxOptionLen+1)}, // too long to serve: skipped
		{999, make([]byte, maxOptionLen+1)},
	} {
		c.option(tc.opt, tc.data)
		typ, msg := c.optReply(tc.opt)
		require.Equal(t, uint32(repErrTLSReqd), typ, "option %d", tc.opt)
		require.NotContains(t, string(msg), "secret")
	}
	require.NoError(t, c.startTLS(certs.clientConfig(nil)))
	info := c.connect2()
	require.Equal(t, uint64(12345), info.size)
	errno, data := c.read(12345-100, 100)
	require.Zero(t, errno)
	require.Equal(t, pattern(0, 12345)[12345-100:], data)

	t.Run("abort", func(t *testing.T) {
		c := dialFixed(t, ts)
		require.Equal(t, uint32(repAck), c.ask(optAbort, nil))
		c.expectEOF()
	})
	t.Run("export name closes", func(t *testing.T) {
		for _, flags := range []uint32{clientFlagFixedNewstyle, 0} {
			c := dial(t, ts)
			c.greet(flags)
			c.option(optExportName, []byte("secret-disk"))
			c.expectEOF()
		}
		ts.waitLog("NBD_OPT_EXPORT_NAME without TLS")
	})
	t.Run("export name after TLS", func(t *testing.T) {
		c := dial(t, ts)
		c.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
		require.NoError(t, c.startTLS(certs.clientConfig(nil)))
		c.option(optExportName, []byte("secret-disk"))
		require.Equal(t, uint64(12345), c.u64())
		require.Equal(t, uint16(writableFlags), c.u16())
		errno, _ := c.read(0, 4096)
		require.Zero(t, errno)
	})
}

func TestStartTLSBadInput(t *testing.T) {
	certs := newTLSCerts(t)
	// The default time limit of the negotiation: the upgrades that must
	// succeed stay well within it on a loaded machine, and the other bad
	// input ends its connection without it.
	ts := startServer(t, serverConfig{tune: certs.tlsServer(TLSOn, false)})
	t.Run("with data", func(t *testing.T) {
		c := dialFixed(t, ts)
		require.Equal(t, uint32(repErrInvalid), c.ask(optStartTLS, []byte{0}))
		// Still negotiating, in plain text; the upgrade can follow.
		require.NoError(t, c.startTLS(certs.clientConfig(nil)))
		c.connect2()
	})
	t.Run("after other options", func(t *testing.T) {
		c := dialFixed(t, ts)
		c.option(optInfo, goData(""))
		_, typ, _ := c.infoReplies(optInfo)
		require.Equal(t, uint32(repAck), typ)
		require.Equal(t, uint32(repAck), c.ask(optStructuredReply, nil))
		require.NoError(t, c.startTLS(certs.clientConfig(nil)))
		c.connect2()
		// Structured replies were forgotten: a simple reply (c.read
		// checks its magic).
		errno, _ := c.read(0, 512)
		require.Zero(t, errno)
	})
	t.Run("twice", func(t *testing.T) {
		c := dialFixed(t, ts)
		require.NoError(t, c.startTLS(certs.clientConfig(nil)))
		require.Equal(t, uint32(repErrInvalid), c.ask(optStartTLS, nil))
		c.connect2()
		errno, _ := c.read(0, 512)
		require.Zero(t, errno)
	})
	t.Run("more data before the reply", func(t *testing.T) {
		// An option sent in plain text behind STARTTLS must not be taken
		// as sent under TLS: the connection closes without a reply.
		c := dialFixed(t, ts)
		var b []byte
		for _, opt := range []uint32{optStartTLS, optStructuredReply} {
			b = binary.BigEndian.AppendUint64(b, magicOption)
			b = binary.BigEndian.AppendUint32(b, opt)
			b = binary.BigEndian.AppendUint32(b, 0)
		}
		c.send(b)
		c.expectEOF()
		ts.waitLog("data sent after NBD_OPT_STARTTLS")
	})
	t.Run("garbage handshake", func(t *testing.T) {
		c := dialFixed(t, ts)
		c.requestTLS()
		c.send(bytes.Repeat([]byte("not a TLS client hello\n"), 40))
		drainToEOF(t, c)
		ts.waitLog("TLS handshake: tls:")
	})
	t.Run("stalled handshake", func(t *testing.T) {
		// A server of its own, whose short time limit ends the
		// negotiation; it need only outlast the greeting and one option.
		ts := startServer(t, serverConfig{tune: func(s *Server) {
			certs.tlsServer(TLSOn, false)(s)
			s.HandshakeTimeout = 2 * time.Second
		}})
		c := dialFixed(t, ts)
		c.requestTLS()
		// Say nothing more: the negotiation deadline ends the handshake.
		c.expectEOF()
		ts.waitLog("i/o timeout")
		require.True(t, hasLog(ts, "TLS handshake", "i/o timeout"))
	})
	t.Run("client hangs up mid-handshake", func(t *testing.T) {
		c := dialFixed(t, ts)
		c.requestTLS()
		c.send([]byte{0x16, 0x03, 0x01, 0x02})
		require.NoError(t, c.nc.Close())
		ts.waitLog("TLS handshake: unexpected EOF")
	})
}

// tlsServerForShutdown starts a server with TLS on, whose handshakes no
// time limit of its own ends, and whose Shutdown waits 10 ms for a
// negotiating client's next option, for tests that end connections with
// Shutdown; it returns the server and its certificates.
func tlsServerForShutdown(t *testing.T) (*testServer, *tlsCerts) {
	t.Helper()
	saved := shutdownOptionWait
	t.Cleanup(func() { shutdownOptionWait = saved })
	shutdownOptionWait = 10 * time.Millisecond
	certs := newTLSCerts(t)
	ts := startServer(t, serverConfig{tune: func(s *Server) {
		certs.tlsServer(TLSOn, false)(s)
		s.HandshakeTimeout = time.Hour
	}})
	return ts, certs
}

// TestShutdownDuringTLSHandshakeLogsNothing checks that a connection whose
// TLS handshake Shutdown ends (with the bound it sets on a negotiation, see
// conn.stop) logs nothing, as other connections that Shutdown ends do: the
// server stops by request, and the timeout is no fault of the connection. A
// handshake that the negotiation's own time limit ends is still logged (see
// TestStartTLSBadInput).
func TestShutdownDuringTLSHandshakeLogsNothing(t *testing.T) {
	ts, _ := tlsServerForShutdown(t) // only Shutdown ends the handshake
	c := dialFixed(t, ts)
	c.requestTLS()
	c.send([]byte{0x16, 0x03, 0x01, 0x02}) // the start of a ClientHello's record
	waitStack(t, "nbd.(*negotiation).startTLS", "crypto/tls.(*Conn).readRecord", "runtime_pollWait")
	require.NoError(t, ts.srv.Shutdown(context.Background()))
	c.expectEOF()
	ts.logMu.Lock()
	defer ts.logMu.Unlock()
	require.Empty(t, ts.logs)
}

// TestStartTLSForgetsStructuredReplies checks that structured replies and
// the metadata context negotiated in plain text end with STARTTLS, as the
// protocol asks: over TLS the client negotiates them again or goes without.
func TestStartTLSForgetsStructuredReplies(t *testing.T) {
	certs := newTLSCerts(t)
	ts := startServer(t, serverConfig{tune: certs.tlsServer(TLSOn, false)})
	// upgrade negotiates structured replies and base:allocation in plain
	// text, then starts TLS.
	upgrade := func(t *testing.T) *client {
		c := dialFixed(t, ts)
		c.structuredReply()
		c.option(optSetMetaContext, metaData("", baseAllocation))
		ctxs, typ := c.metaReplies(optSetMetaContext)
		require.Equal(t, uint32(repAck), typ)
		require.Equal(t, map[string]uint32{baseAllocation: baseAllocationID}, ctxs)
		require.NoError(t, c.startTLS(certs.clientConfig(nil)))
		return c
	}
	t.Run("neither", func(t *testing.T) {
		c := upgrade(t)
		c.option(optSetMetaContext, metaData("", baseAllocation))
		_, typ := c.metaReplies(optSetMetaContext)
		require.Equal(t, uint32(repErrInvalid), typ, "SET_META_CONTEXT without structured replies")
		c.connect2()
		errno, data := c.read(0, 4096) // c.read checks the simple reply's magic
		require.Zero(t, errno)
		require.Equal(t, pattern(0, 4096), data)
		errno, _ = c.do(cmdBlockStatus, 0, 0, 4096, nil)
		require.Equal(t, uint32(errInval), errno, "an unknown command without structured replies")
	})
	t.Run("structured replies again, no context", func(t *testing.T) {
		c := upgrade(t)
		c.structuredReply() // acknowledged: not "already negotiated"
		c.connect2()
		res := c.readChunks(0, 0, 4096)
		require.Nil(t, res.err)
		require.Equal(t, pattern(0, 4096), res.data)
		_, _, cerr := c.blockStatus(0, 0, 4096)
		require.NotNil(t, cerr, "base:allocation was forgotten")
		require.Equal(t, uint32(errInval), cerr.errno)
		require.Contains(t, cerr.msg, "metadata context")
	})
}

// TestStructuredOverTLS checks structured reads (holes, data and error
// chunks) and block status over TLS, under TLSRequire.
func TestStructuredOverTLS(t *testing.T) {
	certs := newTLSCerts(t)
	ts := startServer(t, serverConfig{size: sparseSize, tune: certs.tlsServer(TLSRequire, false)})
	content, holes := makeSparse(t, ts.file)
	c := dialFixed(t, ts)
	require.NoError(t, c.startTLS(certs.clientConfig(nil)))
	c.connectStructured2()

	const k = 1 << 10
	res := c.readChunks(0, 0, sparseSize)
	require.Nil(t, res.err)
	require.True(t, bytes.Equal(content, res.data), "content of the sparse file")
	id, exts, cerr := c.blockStatus(0, 0, sparseSize)
	require.Nil(t, cerr)
	require.Equal(t, uint32(baseAllocationID), id)
	want := []extent{{sparseSize, 0}} // everything is data without SEEK_HOLE
	if holes {
		hole := uint32(stateHole | stateZero)
		want = []extent{{64 * k, 0}, {192 * k, hole}, {64 * k, 0}, {704 * k, hole}}
		require.Equal(t, [][2]uint64{{64 * k, 192 * k}, {320 * k, 704 * k}}, res.holes)
		require.Less(t, res.wire, sparseSize/2, "holes are not sent as zeroes")
	}
	require.Equal(t, want, exts)

	// A refused read gets an error chunk; a write, a simple reply; the
	// written hole becomes data.
	res = c.readChunks(0, sparseSize-100, 4096)
	require.NotNil(t, res.err)
	require.Equal(t, uint32(errInval), res.err.errno)
	require.Zero(t, c.write(128*k, pattern(9, 4096), cmdFlagFUA))
	_, exts, cerr = c.blockStatus(cmdFlagReqOne, 128*k, 4096)
	require.Nil(t, cerr)
	require.Equal(t, []extent{{4096, 0}}, exts)
}

// drainToEOF reads until the server closes the connection; a TLS alert
// the server sends first is read over.
func drainToEOF(t *testing.T, c *client) {
	t.Helper()
	_, err := c.br.WriteTo(discard{})
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) { // a TLS record cut short
		require.True(t, isReset(err), "want EOF, got %v", err)
	}
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

// hasLog reports whether one log line contains all of parts.
func hasLog(ts *testServer, parts ...string) bool {
	ts.logMu.Lock()
	defer ts.logMu.Unlock()
	for _, l := range ts.logs {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			return true
		}
	}
	return false
}

func TestTLSClientVerification(t *testing.T) {
	certs := newTLSCerts(t)
	ts := startServer(t, serverConfig{tune: certs.tlsServer(TLSRequire, true)})

	good := dialFixed(t, ts)
	require.NoError(t, good.startTLS(certs.clientConfig(certs.client)))
	good.connect2()
	errno, _ := good.read(0, 4096)
	require.Zero(t, errno)

	for _, tc := range []struct {
		name string
		cert *testcerts.Leaf
		log  string
	}{
		{"certificate from another CA", certs.stranger, "certificate signed by unknown authority"},
		{"no certificate", nil, "client didn't provide a certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialFixed(t, ts)
			// With TLS 1.3 the client's handshake may end before the
			// server has checked its certificate; the refusal then
			// comes as an alert on the next read (or the next write
			// finds the connection closed).
			err := c.startTLS(certs.clientConfig(tc.cert))
			if err == nil {
				_, err = c.nc.Write(binary.BigEndian.AppendUint64(nil, magicOption))
			}
			if err == nil {
				_, err = c.br.ReadByte()
			}
			require.Error(t, err)
			ts.waitLog(tc.log)
		})
	}
}

// countingListener counts the writes made on the connections it accepts.
type countingListener struct {
	net.Listener
	writes *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{nc, l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// TestTLSOneWritePerBatch checks that a batch of replies over TLS, which
// takes several TLS records, still leaves in one write to the socket.
func TestTLSOneWritePerBatch(t *testing.T) {
	certs := newTLSCerts(t)
	var writes atomic.Int64
	ts := startServer(t, serverConfig{
		size:   1 << 20,
		tune:   certs.tlsServer(TLSOn, false),
		listen: func(l net.Listener) net.Listener { return countingListener{l, &writes} },
	})
	c := dialFixed(t, ts)
	require.NoError(t, c.startTLS(certs.clientConfig(nil)))
	c.connect2()
	resume := ts.exec.pauseDelivery()
	const n = 32 // 128 KiB of data: 9 TLS records
	for i := range n {
		c.request(cmdRead, 0, uint64(i)*4096, 4096, nil)
	}
	ts.exec.waitCompleted(n)
	before := writes.Load()
	resume()
	file := pattern(0, 1<<20)
	for range n {
		cookie, errno, data := c.reply()
		require.Zero(t, errno)
		off := (cookie - 1) * 4096
		require.Equal(t, file[off:off+4096], data)
	}
	require.Equal(t, int64(1), writes.Load()-before, "one write for the batch")
}

// stuckTLSClient is stuckClient over TLS: it sends large reads and never
// reads a reply.
func stuckTLSClient(t *testing.T, ts *testServer, certs *tlsCerts) *client {
	c := dialFixed(t, ts)
	require.NoError(t, c.startTLS(certs.clientConfig(nil)))
	c.connect2()
	for range 64 {
		c.request(cmdRead, 0, 0, 1<<20, nil)
	}
	return c
}

// TestTLSStuckClientDoesNotStallOthers is TestStuckClientDoesNotStallOthers
// over TLS: another client is served while the writer goroutine's send of
// records to a TLS client that reads none of its replies waits for it. With
// a write timeout of 200 ms the test passed a completion goroutine that
// waited on the stuck socket, the timeout bounding the wait; with an hour,
// such a wait keeps the other client's replies past its minute's deadline.
func TestTLSStuckClientDoesNotStallOthers(t *testing.T) {
	certs := newTLSCerts(t)
	ts := startServer(t, serverConfig{size: 1 << 20, tune: func(s *Server) {
		certs.tlsServer(TLSOn, false)(s)
		s.WriteTimeout = time.Hour
	}})
	stuck := stuckTLSClient(t, ts, certs)
	waitStack(t, "nbd.writeProgressing", "runtime_pollWait") // the send to it waits
	c := dialFixed(t, ts)
	require.NoError(t, c.startTLS(certs.clientConfig(nil)))
	c.connect2()
	requireServedBesideStuck(t, ts, c, 20, stuck)
}

// TestTLSStuckClientDropped is TestStuckClientDropped over TLS: the write
// timeout drops a TLS client that reads none of its replies, whose
// connection then ends in EOF (or a reset, or a record cut short) after the
// records sent before.
func TestTLSStuckClientDropped(t *testing.T) {
	certs := newTLSCerts(t)
	ts := startServer(t, serverConfig{size: 1 << 20, tune: func(s *Server) {
		certs.tlsServer(TLSOn, false)(s)
		s.WriteTimeout = 200 * time.Millisecond
	}})
	// No reply goes out, so no send can time out, until the stuck
	// client's 64 requests are all in: a client dropped before it sent
	// them all would fail its send.
	release := ts.exec.holdWork()
	stuck := stuckTLSClient(t, ts, certs)
	ts.exec.waitSubmitted(64)
	release()
	ts.waitLog("sending replies")
	drainToEOF(t, stuck)
}

// sendBuffer returns the SO_SNDBUF of the socket under nc.
func sendBuffer(t *testing.T, nc net.Conn) int {
	t.Helper()
	rc, err := nc.(syscall.Conn).SyscallConn()
	require.NoError(t, err)
	var size int
	var serr error
	require.NoError(t, rc.Control(func(fd uintptr) {
		size, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	}))
	require.NoError(t, serr)
	return size
}

// TestUnixSendBufferUnderTLS checks that a connection in transmission over
// TLS has the enlarged send buffer on its Unix socket, as a plain one has.
func TestUnixSendBufferUnderTLS(t *testing.T) {
	// What the kernel makes of the request (Linux doubles it and caps it
	// at net.core.wmem_max), on a fresh socket.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	require.NoError(t, err)
	require.NoError(t, unix.Close(fds[1]))
	f := os.NewFile(uintptr(fds[0]), "socketpair")
	probe, err := net.FileConn(f)
	require.NoError(t, f.Close())
	require.NoError(t, err)
	defer probe.Close()
	before := sendBuffer(t, probe)
	require.NoError(t, probe.(*net.UnixConn).SetWriteBuffer(unixSendBuffer))
	want := sendBuffer(t, probe)
	if want <= before {
		t.Skipf("the kernel keeps Unix send buffers at %d bytes", before)
	}

	certs := newTLSCerts(t)
	ts := startServer(t, serverConfig{tune: certs.tlsServer(TLSOn, false)})
	secure := dialFixed(t, ts)
	require.NoError(t, secure.startTLS(certs.clientConfig(nil)))
	secure.connect2()
	plain := dial(t, ts)
	plain.connect("")
	// A reply on each means both connections are in transmission.
	for _, c := range []*client{secure, plain} {
		errno, _ := c.read(0, 4096)
		require.Zero(t, errno)
	}
	got := map[bool]int{} // over TLS: the send buffer
	ts.srv.mu.Lock()
	for sc := range ts.srv.conns {
		got[sc.rw != sc.nc] = sendBuffer(t, sc.nc)
	}
	ts.srv.mu.Unlock()
	require.Equal(t, map[bool]int{true: want, false: want}, got)
}

// pacedConn is a connection whose reads are pacedReader's: a TLS client on
// a slow link, which keeps reading.
type pacedConn struct{ net.Conn }

func (c pacedConn) Read(b []byte) (int, error) { return pacedReader{c.Conn}.Read(b) }

// startSlowTLS starts a TCP server with TLS and the write timeout wt, whose
// sockets hold little (narrowSendListener), and a client over TLS with a
// receive buffer of pacedWindow whose reads of the socket are paced's:
// pacedConn's where paced is true, the socket's own otherwise.
func startSlowTLS(t *testing.T, wt time.Duration, paced bool) (*testServer, *client) {
	t.Helper()
	certs := newTLSCerts(t)
	ts := startServer(t, serverConfig{size: 1 << 20, tcp: true,
		listen: func(l net.Listener) net.Listener { return narrowSendListener{l} },
		tune: func(s *Server) {
			certs.tlsServer(TLSOn, false)(s)
			s.WriteTimeout = wt
		}})
	c := dialWindow(t, ts, pacedWindow)
	c.greet(clientFlagFixedNewstyle)
	c.requestTLS()
	var nc net.Conn = c.nc
	if paced {
		nc = pacedConn{c.nc}
	}
	tc := tls.Client(nc, certs.clientConfig(nil))
	require.NoError(t, tc.Handshake())
	c.nc, c.br = tc, bufio.NewReader(tc)
	c.connect2()
	return ts, c
}

// sendOneBatch sends n reads of the whole 1 MiB export and lets their
// replies go out in one batch, which the writer goroutine sends in one
// send. It returns their cookies.
func sendOneBatch(ts *testServer, c *client, n int) map[uint64]bool {
	resume := ts.exec.pauseDelivery()
	want := map[uint64]bool{}
	for range n {
		want[c.request(cmdRead, 0, 0, 1<<20, nil)] = true
	}
	ts.exec.waitCompleted(n)
	resume()
	return want
}

// TestSlowTLSClientIsNotDropped is TestSlowClientIsNotDropped over TLS: a
// client that keeps reading its replies, only slowly, is served however long
// the send takes in all. The writer goroutine's records go to the socket
// beneath TLS, so a write that times out after the client took some of them
// gets another timeout for the rest, as in plain text. Here 8 MiB of
// replies, which the client reads in at least 2048 reads 2 ms apart (over
// 4 s), go out in one send, with a timeout of 2.5 s.
func TestSlowTLSClientIsNotDropped(t *testing.T) {
	ts, c := startSlowTLS(t, 2500*time.Millisecond, true)
	const n = 8
	want := sendOneBatch(ts, c, n)
	requireKeptForReplies(t, ts, c, want)
}

// TestTLSClientThatStopsReadingIsDropped checks that the timeout still drops
// a TLS client that took part of a send and then stopped reading: it gets
// another timeout for the rest, in which it takes nothing.
func TestTLSClientThatStopsReadingIsDropped(t *testing.T) {
	ts, c := startSlowTLS(t, 3*time.Second, false)
	const n = 8
	want := sendOneBatch(ts, c, n)
	cookie, errno, data := c.reply()
	require.True(t, want[cookie])
	require.Zero(t, errno)
	require.Equal(t, pattern(0, 1<<20), data)
	// The client reads nothing more until the server gives up.
	ts.waitLog("sending replies")
	drainToEOF(t, c)
}

// TestTLSNegotiationFailedSendNoCloseNotify checks that a TLS connection
// whose send failed in negotiation closes without a close_notify, as one
// whose send failed in transmission does: the stream of records is cut,
// and the alert would wait up to crypto/tls's 5 s for a client that does
// not read. Here the client sends options after STARTTLS and reads none of
// the replies; Shutdown bounds the send that waits for it, and must then
// be done well within those 5 s.
func TestTLSNegotiationFailedSendNoCloseNotify(t *testing.T) {
	ts, certs := tlsServerForShutdown(t)
	c := dialFixed(t, ts)
	require.NoError(t, c.startTLS(certs.clientConfig(nil)))
	sent := floodOptions(c.nc)
	waitStack(t, "nbd.(*conn).negotiate", "nbd.(*corkConn).writeRaw", "runtime_pollWait")

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	require.NoError(t, ts.srv.Shutdown(ctx))
	c.nc.(*tls.Conn).NetConn().Close()
	<-sent
}
