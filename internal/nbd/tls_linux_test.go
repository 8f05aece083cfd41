package nbd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"net"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A TLS 1.3 client that asks for key updates and stops reading, written
// record by record (crypto/tls has no API to send a KeyUpdate), and the
// socket's state read with TCP_INFO: Linux only.

// recCounter counts the TLS records with outer type application_data (23)
// that a client writes: in TLS 1.3 every encrypted record, the client's
// Finished included.
type recCounter struct {
	net.Conn
	hdr  []byte // a record header being gathered
	left int    // bytes of the current record's body still to come
	n    int    // application_data records begun
}

func (r *recCounter) Write(b []byte) (int, error) {
	for p := b; len(p) > 0; {
		if r.left > 0 {
			k := min(r.left, len(p))
			r.left -= k
			p = p[k:]
			continue
		}
		k := min(5-len(r.hdr), len(p))
		r.hdr = append(r.hdr, p[:k]...)
		p = p[k:]
		if len(r.hdr) == 5 {
			if r.hdr[0] == 23 {
				r.n++
			}
			r.left = int(binary.BigEndian.Uint16(r.hdr[3:]))
			r.hdr = r.hdr[:0]
		}
	}
	return r.Conn.Write(b)
}

// expandLabel is TLS 1.3's HKDF-Expand-Label with an empty context.
func expandLabel(h func() hash.Hash, secret []byte, label string, n int) []byte {
	var info []byte
	info = binary.BigEndian.AppendUint16(info, uint16(n))
	info = append(info, byte(len("tls13 "+label)))
	info = append(info, "tls13 "+label...)
	info = append(info, 0)
	out, err := hkdf.Expand(h, secret, string(info), n)
	if err != nil {
		panic(err)
	}
	return out
}

// rawSender writes a TLS 1.3 client's records itself, past the tls.Conn
// that did the handshake: with the client's application traffic secret and
// its sequence number, it can send what crypto/tls offers no API for, a
// KeyUpdate.
type rawSender struct {
	h      func() hash.Hash
	keyLen int
	secret []byte
	aead   cipher.AEAD
	iv     []byte
	seq    uint64
}

func (s *rawSender) setSecret(secret []byte) {
	s.secret = secret
	block, err := aes.NewCipher(expandLabel(s.h, secret, "key", s.keyLen))
	if err != nil {
		panic(err)
	}
	if s.aead, err = cipher.NewGCM(block); err != nil {
		panic(err)
	}
	s.iv = expandLabel(s.h, secret, "iv", 12)
	s.seq = 0
}

// record appends one encrypted record of inner type typ to b.
func (s *rawSender) record(b []byte, typ byte, content []byte) []byte {
	plain := append(append([]byte(nil), content...), typ)
	hdr := []byte{23, 3, 3, 0, 0}
	binary.BigEndian.PutUint16(hdr[3:], uint16(len(plain)+s.aead.Overhead()))
	nonce := append([]byte(nil), s.iv...)
	for i := range 8 {
		nonce[4+i] ^= byte(s.seq >> (56 - 8*i))
	}
	s.seq++
	b = append(b, hdr...)
	return s.aead.Seal(b, nonce, plain, hdr)
}

// keyUpdate appends a KeyUpdate asking the peer to update too, then moves
// to the next secret.
func (s *rawSender) keyUpdate(b []byte) []byte {
	b = s.record(b, 22, []byte{24, 0, 0, 1, 1}) // key_update, update_requested
	s.setSecret(expandLabel(s.h, s.secret, "traffic upd", s.h().Size()))
	return b
}

// smallSendListener gives every accepted TCP connection a small send
// buffer, so that a client that does not read fills it soon.
type smallSendListener struct{ net.Listener }

func (l smallSendListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err == nil {
		err = nc.(*net.TCPConn).SetWriteBuffer(4096)
	}
	return nc, err
}

// keyLoggedTLS is a client's TLS 1.3 session whose keys the test knows, so
// that it can also send records of its own making (rawSender).
type keyLoggedTLS struct {
	tc        *tls.Conn
	rc        *recCounter  // counts the client's records on the socket
	keys      bytes.Buffer // the session's key log
	handshake int          // records the client sent in the handshake
}

// startKeyLoggedTLS upgrades c, which has asked for STARTTLS, to TLS with a
// key log, and negotiates the export over it.
func startKeyLoggedTLS(t *testing.T, c *client, certs *tlsCerts) *keyLoggedTLS {
	t.Helper()
	kl := &keyLoggedTLS{rc: &recCounter{Conn: c.nc}}
	cfg := certs.clientConfig(nil)
	cfg.KeyLogWriter = &kl.keys
	kl.tc = tls.Client(kl.rc, cfg)
	require.NoError(t, kl.tc.Handshake())
	kl.handshake = kl.rc.n
	c.nc, c.br = kl.tc, bufio.NewReader(kl.tc)
	c.connect2()
	return kl
}

// rawSender returns a sender of records that follow the ones the client
// sent so far, with the session's AES-GCM traffic key.
func (kl *keyLoggedTLS) rawSender(t *testing.T) *rawSender {
	t.Helper()
	st := kl.tc.ConnectionState()
	require.Equal(t, uint16(tls.VersionTLS13), st.Version)
	s := &rawSender{h: sha256.New, keyLen: 16}
	switch st.CipherSuite {
	case tls.TLS_AES_128_GCM_SHA256:
	case tls.TLS_AES_256_GCM_SHA384:
		s.h, s.keyLen = sha512.New384, 32
	default: // Go picks ChaCha20 only on a CPU without AES instructions
		require.Failf(t, "no AES-GCM cipher suite", "the test's records are AES-GCM; got suite %#x", st.CipherSuite)
	}
	var secret []byte
	for _, line := range strings.Split(kl.keys.String(), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "CLIENT_TRAFFIC_SECRET_0" {
			var err error
			secret, err = hex.DecodeString(f[2])
			require.NoError(t, err)
		}
	}
	require.NotNil(t, secret)
	s.setSecret(secret)
	s.seq = uint64(kl.rc.n - kl.handshake)
	return s
}

// A TLS 1.3 client that sends KeyUpdates asking for one back, and does not
// read: crypto/tls answers from inside the reader's Read, and the answers
// go to the writer goroutine, whose send the write timeout bounds. The
// connection drops, as for any client that stops reading, and
// Shutdown(context.Background()) returns. (Here no reply is due at all: the
// client is in the middle of a write's payload.)
func TestWriteTimeoutBoundsTheAnswersToKeyUpdates(t *testing.T) {
	certs := newTLSCerts(t)
	ts := startServer(t, serverConfig{size: 1 << 20, tcp: true,
		listen: func(l net.Listener) net.Listener { return smallSendListener{l} },
		tune: func(s *Server) {
			certs.tlsServer(TLSOn, false)(s)
			s.WriteTimeout = 200 * time.Millisecond
		}})
	c := dialSmallWindow(t, ts)
	c.greet(clientFlagFixedNewstyle)
	c.requestTLS()
	kl := startKeyLoggedTLS(t, c, certs)
	s := kl.rawSender(t)
	// A write of 1 MiB whose payload comes one byte per record, each after
	// 15 KeyUpdates (crypto/tls allows 16 records in a row that carry no
	// data), and never all of it.
	hdr, _ := c.appendRequest(nil, cmdWrite, 0, 0, 1<<20, nil)
	first := s.record(nil, 23, hdr)
	sent := make(chan error, 1)
	go func() {
		b := first
		for range 4000 {
			for range 15 {
				b = s.keyUpdate(b)
			}
			b = s.record(b, 23, []byte{0})
			if _, err := kl.rc.Conn.Write(b); err != nil {
				sent <- err
				return
			}
			b = b[:0]
		}
		sent <- nil
	}()
	// The client reads nothing, and the answers soon wait for room in the
	// socket: the write timeout drops the connection.
	require.True(t, ts.waitLogWithin("sending replies", 30*time.Second),
		"the answers to the KeyUpdates wait for the client with no deadline")
	shut := make(chan error, 1)
	go func() { shut <- ts.srv.Shutdown(context.Background()) }()
	select {
	case err := <-shut:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		c.nc.Close() // lets the server's write fail, and Shutdown return
		<-sent
		<-shut
		require.Fail(t, "Shutdown(context.Background()) hangs on the reader's answer to a KeyUpdate")
	}
	c.nc.Close()
	<-sent
}

// waitLogWithin waits at most d until the server has logged a line
// containing s, and reports whether it did.
func (ts *testServer) waitLogWithin(s string, d time.Duration) bool {
	timeout := time.After(d)
	for {
		found, wake := ts.findLog(s)
		if found {
			return true
		}
		select {
		case <-wake:
		case <-timeout:
			return false
		}
	}
}

// startInlineTLS starts a TCP server of size bytes with TLS, inline
// serving and the write timeout wt, whose sockets hold little, and a client
// with a small receive window negotiated over key-logged TLS 1.3.
func startInlineTLS(t *testing.T, size int64, wt time.Duration) (*testServer, *client, *keyLoggedTLS) {
	t.Helper()
	certs := newTLSCerts(t)
	ts := startServer(t, serverConfig{size: size, tcp: true,
		listen: func(l net.Listener) net.Listener { return smallSendListener{l} },
		tune: func(s *Server) {
			certs.tlsServer(TLSOn, false)(s)
			s.Inline = true
			s.WriteTimeout = wt
		}})
	c := dialSmallWindow(t, ts)
	c.greet(clientFlagFixedNewstyle)
	c.requestTLS()
	return ts, c, startKeyLoggedTLS(t, c, certs)
}

// A TLS 1.3 client sends a batch of cached reads, whose replies the
// connection goroutine serves inline and encrypts, more than the socket
// takes, and then a KeyUpdate asking for one back, and reads nothing. The
// replies wait for the writer goroutine; crypto/tls answers the KeyUpdate
// from inside the reader's Read. That answer must not send the waiting
// records itself: where it did, the write, bounded by the write timeout the
// writer goroutine set meanwhile, failed, and crypto/tls kept the error to
// itself, so the records were dropped while the writer goroutine, finding
// nothing left to send, reported success. The connection then stayed open
// with its replies lost and a record cut short, and the client waited
// forever. The write timeout must drop the connection instead.
//
// One processor and no garbage collection keep the reader running from its
// send to its answer, as it does unless it is preempted.
func TestKeyUpdateAnswerDoesNotLoseWaitingReplies(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	ts, c, kl := startInlineTLS(t, 4<<20, 200*time.Millisecond)
	// A write of full records, so that the server's TLS input buffer
	// holds the batch and the KeyUpdate below in one read.
	require.Zero(t, c.write(3<<20, pattern(9, 60<<10), 0))
	s := kl.rawSender(t)
	const n = 60 << 10 // under sparseReadMin: the cached reads are served inline
	var reqs []byte
	for i := range inlineRun {
		reqs, _ = c.appendRequest(reqs, cmdRead, 0, uint64(i)*n, n, nil)
	}
	b := s.keyUpdate(s.record(nil, 23, reqs))
	_, err := kl.rc.Conn.Write(b)
	require.NoError(t, err)
	require.True(t, ts.waitLogWithin("sending replies", 30*time.Second),
		"replies that could not be sent in the write timeout were dropped and the connection kept")
}

// sendKeyUpdateThenWrites sends with s, in one go, a KeyUpdate and then
// writes requests of 512 KiB each from offset base on, more than the
// sockets hold, and fails the test with msg unless the server reads all of it
// within 30 s.
func sendKeyUpdateThenWrites(t *testing.T, c *client, kl *keyLoggedTLS, s *rawSender, base uint64, writes int, msg string) {
	t.Helper()
	const wn = 512 << 10
	b := s.keyUpdate(nil)
	var reqs []byte
	for i := range writes {
		reqs, _ = c.appendRequest(reqs, cmdWrite, 0, base+uint64(i)*wn, wn, pattern(byte(i), wn))
	}
	b = s.records(b, reqs)
	sent := make(chan error, 1)
	go func() {
		_, err := kl.rc.Conn.Write(b)
		sent <- err
	}()
	select {
	case err := <-sent:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		c.nc.Close()
		<-sent
		require.Fail(t, msg)
	}
}

// records appends b to out as records of application data of at most 16 KiB
// each.
func (s *rawSender) records(out, b []byte) []byte {
	for len(b) > 0 {
		k := min(16<<10, len(b))
		out = s.record(out, 23, b[:k])
		b = b[k:]
	}
	return out
}

// A TLS 1.3 client sends a batch of cached reads, whose replies the
// connection goroutine serves inline, more than the socket takes, so that
// the writer goroutine sends the rest, waiting for the client; then it sends
// a KeyUpdate asking for one back and a batch of writes larger than the
// sockets hold, and reads the replies only once its send is done. The
// reader's answer to the KeyUpdate goes behind the records the writer
// goroutine is sending: it must not wait for the writer goroutine's send to
// end, which waits for the client, which waits for the reader to read its
// writes. Where it did, both sides waited until the write timeout dropped
// the connection and its replies.
func TestKeyUpdateAnswerDoesNotWaitForTheWriter(t *testing.T) {
	ts, c, kl := startInlineTLS(t, 12<<20, time.Minute) // the timeout bounds the wait of the failure
	s := kl.rawSender(t)
	const n = 60 << 10              // under sparseReadMin: the cached reads are served inline
	want := pattern(0, inlineRun*n) // the export's content, in the page cache
	reads := map[uint64]uint64{}
	var reqs []byte
	for i := range inlineRun {
		var cookie uint64
		reqs, cookie = c.appendRequest(reqs, cmdRead, 0, uint64(i)*n, n, nil)
		reads[cookie] = uint64(i) * n
	}
	_, err := kl.rc.Conn.Write(s.records(nil, reqs))
	require.NoError(t, err)
	// The writer goroutine sends the replies the socket did not take.
	waitStack(t, "(*corkConn).writeThrough", "waitWrite")
	const writes = 16
	sendKeyUpdateThenWrites(t, c, kl, s, 4<<20, writes,
		"the server stopped reading requests: its answer to the KeyUpdate waits for the writer goroutine")
	for range inlineRun + writes {
		cookie, errno, data := c.reply()
		require.Zero(t, errno)
		if off, ok := reads[cookie]; ok {
			require.Equal(t, want[off:off+n], data)
		}
	}
	require.False(t, hasLog(ts, "sending replies"))
}

// While the writer goroutine waits for a client that does not read, the
// reader adds its answers to the client's KeyUpdates to the records waiting
// behind that send rather than wait itself; a client that floods KeyUpdates
// must not grow them without bound for as long as the write timeout: past
// maxSendingHeld the reader waits for the send.
func TestKeyUpdateFloodWhileTheWriterSendsIsBounded(t *testing.T) {
	ts, c, kl := startInlineTLS(t, 4<<20, time.Minute)
	s := kl.rawSender(t)
	const n = 60 << 10 // under sparseReadMin: the cached reads are served inline
	var reqs []byte
	for i := range inlineRun {
		reqs, _ = c.appendRequest(reqs, cmdRead, 0, uint64(i)*n, n, nil)
	}
	_, err := kl.rc.Conn.Write(s.records(nil, reqs))
	require.NoError(t, err)
	waitStack(t, "(*corkConn).writeThrough", "waitWrite")
	// A write of 1 MiB whose payload comes one byte per record, each after
	// 15 KeyUpdates (crypto/tls allows 16 records in a row that carry no
	// data): half as many answers again as maxSendingHeld holds.
	const answerLen = 5 + 5 + 1 + 16 // header, KeyUpdate, content type, tag
	hdr, _ := c.appendRequest(nil, cmdWrite, 0, 0, 1<<20, nil)
	b := s.record(nil, 23, hdr)
	for range maxSendingHeld / answerLen * 3 / 2 / 15 {
		for range 15 {
			b = s.keyUpdate(b)
		}
		b = s.record(b, 23, []byte{0})
	}
	sent := make(chan error, 1)
	go func() {
		_, err := kl.rc.Conn.Write(b)
		sent <- err
	}()
	waitStack(t, "(*corkConn).Write", "sync.(*Cond).Wait")
	cork := onlyConn(t, ts).rw.(*tlsConn).cork
	cork.mu.Lock()
	held := len(cork.pending)
	cork.mu.Unlock()
	require.Less(t, held, maxSendingHeld+answerLen)
	c.nc.Close() // the server's send fails, and the connection closes
	<-sent
}

// sendQueue returns the bytes a Unix socket holds for its peer (the memory
// its send buffer has in use) and the size of that buffer.
func sendQueue(t *testing.T, nc net.Conn) (queued, size int) {
	t.Helper()
	rc, err := nc.(*net.UnixConn).SyscallConn()
	require.NoError(t, err)
	var qerr, serr error
	require.NoError(t, rc.Control(func(fd uintptr) {
		queued, qerr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
		size, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	}))
	require.NoError(t, qerr)
	require.NoError(t, serr)
	return queued, size
}

// A TLS 1.3 client reads cached data one request at a time, served inline,
// and does not read the replies until the server's socket is full, though
// it took every reply whole: nothing waits in the TLS connection and the
// writer goroutine is idle. Then it sends a KeyUpdate asking for one back
// and a batch of writes, and reads the replies only once its send is done.
// The reader's answer to the KeyUpdate must not wait for room in the socket
// itself, which waits for the client, which waits for the reader to read
// its writes: where it did, with no deadline on that write, both sides
// waited forever.
func TestKeyUpdateAnswerDoesNotWaitForAFullSocket(t *testing.T) {
	certs := newTLSCerts(t)
	ts := startServer(t, serverConfig{size: 4 << 20,
		tune: func(s *Server) {
			certs.tlsServer(TLSOn, false)(s)
			s.Inline = true
			s.WriteTimeout = time.Minute // beyond the test's wait for the send below
		}})
	c := dial(t, ts)
	c.greet(clientFlagFixedNewstyle)
	c.requestTLS()
	kl := startKeyLoggedTLS(t, c, certs)
	sc := onlyConn(t, ts)
	// Cached reads are served inline. A Unix socket takes a write whole, in
	// one buffer of up to 32 KiB or so, while it holds less than its send
	// buffer: stop at the first reply that fills it.
	const n = 24 << 10
	want := pattern(0, n)
	var reads []uint64
	for {
		before, size := sendQueue(t, sc.nc)
		if before >= size {
			break
		}
		req, cookie := c.appendRequest(nil, cmdRead, 0, 0, n, nil)
		_, err := kl.tc.Write(req)
		require.NoError(t, err)
		reads = append(reads, cookie)
		deadline := time.Now().Add(30 * time.Second)
		for q, _ := sendQueue(t, sc.nc); q <= before; q, _ = sendQueue(t, sc.nc) {
			require.False(t, time.Now().After(deadline), "the reply was never written")
			runtime.Gosched()
		}
	}
	waitBudget(t, sc, 0) // every reply written
	sc.out.mu.Lock()
	busy := sc.out.busy
	sc.out.mu.Unlock()
	require.False(t, busy, "the writer goroutine sends replies")
	cork := sc.rw.(*tlsConn).cork
	cork.mu.Lock()
	held := len(cork.pending)
	cork.mu.Unlock()
	require.Zero(t, held, "records wait in the TLS connection")

	const writes = 8
	sendKeyUpdateThenWrites(t, c, kl, kl.rawSender(t), 0, writes,
		"the server stopped reading requests: its answer to the KeyUpdate waits for room in the socket")
	for range len(reads) + writes {
		cookie, errno, data := c.reply()
		require.Zero(t, errno)
		if cookie <= reads[len(reads)-1] {
			require.Equal(t, want, data)
		}
	}
}

// captureListener gives every accepted Unix connection a small send buffer
// and hands it to the test, which watches what it holds for its client.
type captureListener struct {
	net.Listener
	conns chan net.Conn
}

func (l captureListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err == nil {
		err = nc.(*net.UnixConn).SetWriteBuffer(4096)
		l.conns <- nc
	}
	return nc, err
}

// TestShutdownBoundsCloseNotifyOfNegotiatingTLSClient checks that a TLS
// client still negotiating when Shutdown begins, whose every reply was
// sent whole but which read none of them, so that the server's socket is
// full, is closed within Shutdown's wait for its next option, as a client
// in plain text is, and not past that bound by the close_notify sent as
// it closes: crypto/tls gives that alert a write timeout of its own, 5 s,
// in place of the deadline the negotiation set on the socket.
func TestShutdownBoundsCloseNotifyOfNegotiatingTLSClient(t *testing.T) {
	saved := shutdownOptionWait
	t.Cleanup(func() { shutdownOptionWait = saved })
	shutdownOptionWait = 10 * time.Millisecond
	certs := newTLSCerts(t)
	conns := make(chan net.Conn, 1)
	ts := startServer(t, serverConfig{name: strings.Repeat("x", 3000),
		listen: func(l net.Listener) net.Listener { return captureListener{l, conns} },
		tune: func(s *Server) {
			certs.tlsServer(TLSOn, false)(s)
			s.HandshakeTimeout = time.Hour
		}})
	c := dialFixed(t, ts)
	server := <-conns
	require.NoError(t, c.startTLS(certs.clientConfig(nil)))
	// Options whose replies the client does not read, one at a time, each
	// reply written whole (one write, one buffer of the socket), until
	// the socket holds as much as its send buffer: a write now waits.
	for {
		before, size := sendQueue(t, server)
		if before >= size {
			break
		}
		c.option(optList, nil)
		for q, _ := sendQueue(t, server); q == before; q, _ = sendQueue(t, server) {
			runtime.Gosched()
		}
		waitStack(t, "nbd.(*negotiation).option", "runtime_pollWait") // back to reading options
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	require.NoError(t, ts.srv.Shutdown(ctx))
}
