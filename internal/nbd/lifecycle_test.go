package nbd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// waitClosing waits until Shutdown has begun. It spins on the server's
// state rather than sleeping for a guessed time.
func waitClosing(t *testing.T, ts *testServer) {
	t.Helper()
	spinUntil(t, "the server's Shutdown to begin", ts.srv.isClosing)
}

// waitForgotten waits until the server has closed and forgotten every
// connection.
func waitForgotten(t *testing.T, ts *testServer) {
	t.Helper()
	spinUntil(t, "the server to forget every connection", func() bool {
		ts.srv.mu.Lock()
		defer ts.srv.mu.Unlock()
		return len(ts.srv.conns) == 0
	})
}

// spinUntil yields the processor until cond holds, and fails the test if it
// does not within 30 s: a wait that only catches a hang. Test goroutine only.
func spinUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30 s for %s", what)
		}
		runtime.Gosched()
	}
}

// expectReads reads a reply for every cookie in want, in any order: to a
// read of n bytes of a 1 MiB export of pattern(0, ...), at (cookie-1)*n.
func expectReads(c *client, want map[uint64]bool, n uint64) {
	c.t.Helper()
	file := pattern(0, 1<<20)
	for len(want) > 0 {
		cookie, errno, data := c.reply()
		require.True(c.t, want[cookie])
		delete(want, cookie)
		require.Zero(c.t, errno)
		require.Equal(c.t, file[(cookie-1)*n:cookie*n], data)
	}
}

// waitStack waits, at most 60 s, until some goroutine's stack holds every
// one of parts; it fails the test otherwise.
func waitStack(t *testing.T, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	buf := make([]byte, 4<<20)
	for {
		n := runtime.Stack(buf, true)
	next:
		for _, g := range bytes.Split(buf[:n], []byte("\n\n")) {
			for _, p := range parts {
				if !bytes.Contains(g, []byte(p)) {
					continue next
				}
			}
			return
		}
		require.False(t, time.Now().After(deadline), "no goroutine in %q", parts)
		runtime.Gosched()
	}
}

// onlyConn returns the server's one connection.
func onlyConn(t *testing.T, ts *testServer) *conn {
	t.Helper()
	ts.srv.mu.Lock()
	defer ts.srv.mu.Unlock()
	require.Len(t, ts.srv.conns, 1)
	for c := range ts.srv.conns {
		return c
	}
	return nil
}

// waitBudget waits until c holds held requests of its budget.
func waitBudget(t *testing.T, c *conn, held int) {
	t.Helper()
	spinUntil(t, fmt.Sprintf("the connection's budget to hold %d requests", held), func() bool {
		c.budget.mu.Lock()
		defer c.budget.mu.Unlock()
		return c.budget.reqs == held
	})
}

// holdLinger makes a closing TCP connection discard its client's input for
// up to a minute (see conn.linger), rather than lingerTimeout, for a test
// whose client must close its side before the server gives up: a loaded
// machine may take longer than lingerTimeout over the test's steps. Call it
// before startServer, so that it is undone after the server has shut down.
func holdLinger(t *testing.T) {
	old := lingerTimeout
	lingerTimeout = time.Minute
	t.Cleanup(func() { lingerTimeout = old })
}

func TestDiscAnswersRequestsInFlight(t *testing.T) {
	ts := startServer(t, serverConfig{})
	c := dial(t, ts)
	c.connect("")
	release := ts.exec.holdWork()
	for i := range 10 {
		c.request(cmdRead, 0, uint64(i)*4096, 4096, nil)
	}
	c.request(cmdDisc, 0, 0, 0, nil)
	release()
	for range 10 {
		_, errno, _ := c.reply()
		require.Zero(t, errno)
	}
	c.expectEOF()
}

func TestClientGoneWithRequestsInFlight(t *testing.T) {
	ts := startServer(t, serverConfig{})
	c := dial(t, ts)
	c.connect("")
	release := ts.exec.holdWork()
	for i := range 20 {
		c.request(cmdRead, 0, uint64(i)*4096, 65536, nil)
		c.request(cmdWrite, 0, uint64(i)*4096, 4096, pattern(1, 4096))
	}
	require.NoError(t, c.nc.Close())
	release()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, ts.srv.Shutdown(ctx))
}

func TestShutdownAnswersRequestsInFlight(t *testing.T) {
	ts := startServer(t, serverConfig{})
	c := dial(t, ts)
	c.connect("")
	release := ts.exec.holdWork()
	want := map[uint64]bool{}
	for i := range 10 {
		want[c.request(cmdWrite, cmdFlagFUA, uint64(i)*4096, 4096, pattern(byte(i), 4096))] = true
	}
	// Shut down once the server has read them all: requests still unread
	// in the socket are not answered.
	ts.exec.waitSubmitted(10)
	shut := make(chan error, 1)
	go func() { shut <- ts.srv.Shutdown(context.Background()) }()
	waitClosing(t, ts)
	release()
	for range 10 {
		cookie, errno, _ := c.reply()
		require.Zero(t, errno)
		require.True(t, want[cookie])
		delete(want, cookie)
	}
	c.expectEOF()
	require.NoError(t, <-shut)
	_, err := net.Dial("unix", ts.addr)
	require.Error(t, err, "listener closed")
}

// A request whose header was read while the connection's budget was
// spent, and which waits for it, is answered too: with NBD_ESHUTDOWN.
func TestShutdownAnswersRequestWaitingForBudget(t *testing.T) {
	ts := startServer(t, serverConfig{tune: func(s *Server) { s.MaxRequests = 1 }})
	c := dial(t, ts)
	c.connect("")
	release := ts.exec.holdWork()
	first := c.request(cmdWrite, cmdFlagFUA, 0, 4096, pattern(1, 4096))
	ts.exec.waitSubmitted(1)
	second := c.request(cmdRead, 0, 4096, 4096, nil)
	waitStack(t, "nbd.(*budget).acquire", "sync.(*Cond).Wait") // the second's header read, its budget awaited
	shut := make(chan error, 1)
	go func() { shut <- ts.srv.Shutdown(context.Background()) }()
	waitClosing(t, ts)
	release()
	got := map[uint64]uint32{}
	for range 2 {
		cookie, errno, _ := c.reply()
		got[cookie] = errno
	}
	require.Equal(t, map[uint64]uint32{first: 0, second: errShutdown}, got)
	c.expectEOF()
	require.NoError(t, <-shut)
}

// A write whose payload Shutdown cuts short is answered with
// NBD_ESHUTDOWN.
func TestShutdownAnswersWriteCutShort(t *testing.T) {
	ts := startServer(t, serverConfig{})
	c := dial(t, ts)
	c.connect("")
	b, cookie := c.appendRequest(nil, cmdWrite, 0, 0, 8192, pattern(1, 8192))
	c.send(b[:len(b)-4096])
	waitBudget(t, onlyConn(t, ts), 1) // the header read, the payload awaited
	shut := make(chan error, 1)
	go func() { shut <- ts.srv.Shutdown(context.Background()) }()
	got, errno, _ := c.reply()
	require.Equal(t, cookie, got)
	require.Equal(t, uint32(errShutdown), errno)
	c.expectEOF()
	require.NoError(t, <-shut)
}

// Over TCP, replies written before the connection closes reach a client
// that goes on sending meanwhile: the server does not close with unread
// input, which would make the kernel reset the connection and drop the
// replies still queued. The client here never closes its side, so the
// server gives up discarding its input after lingerTimeout.
func TestShutdownRepliesSurviveUnreadInput(t *testing.T) {
	ts, c := smallWindowServer(t)
	release := ts.exec.holdWork()
	const n = 64 << 10 // large enough to go to the executor
	want := map[uint64]bool{}
	for i := range 2 {
		want[c.request(cmdRead, 0, uint64(i)*n, n, nil)] = true
	}
	ts.exec.waitSubmitted(2)
	shut := make(chan error, 1)
	go func() { shut <- ts.srv.Shutdown(context.Background()) }()
	waitClosing(t, ts)
	// More requests than the server's input buffer holds, which it no
	// longer reads: not answered.
	var more []byte
	for i := range 10000 {
		more, _ = c.appendRequest(more, cmdRead, 0, uint64(i%256)*4096, 4096, nil)
	}
	wrote := make(chan error, 1)
	go func() { _, err := c.nc.Write(more); wrote <- err }()
	release()
	require.NoError(t, <-shut)
	expectReads(c, want, n)
	c.expectEOF()
	require.NoError(t, <-wrote)
}

// A Shutdown that begins while a TCP connection discards its client's
// input before it closes (here after a bad request magic, with replies
// still queued for a client that keeps sending) does not cut that short:
// the replies still arrive.
func TestShutdownDuringLingerKeepsReplies(t *testing.T) {
	holdLinger(t)
	ts, c := smallWindowServer(t)
	const n = 64 << 10
	b, want := readsThenBadMagic(c, n)
	c.send(b)
	shut := shutdownDuringLinger(t, ts, c)
	expectReads(c, want, n)
	c.expectEOF()
	require.NoError(t, <-shut)
}

// TestShutdownClosesNegotiatingConnections checks that a client still
// negotiating when Shutdown begins, which sends no further option, is
// closed once Shutdown's wait for its option is over (see conn.stop).
func TestShutdownClosesNegotiatingConnections(t *testing.T) {
	ts := startServer(t, serverConfig{})
	c := dialListed(t, ts)
	require.NoError(t, ts.srv.Shutdown(context.Background()))
	c.expectEOF()
}

// dialListed dials ts and negotiates as far as a listing of the exports,
// leaving the client in negotiation with no option outstanding.
func dialListed(t *testing.T, ts *testServer) *client {
	t.Helper()
	c := dial(t, ts)
	c.greet(clientFlagFixedNewstyle)
	c.option(optList, nil)
	typ, _ := c.optReply(optList)
	require.Equal(t, uint32(repServer), typ)
	typ, _ = c.optReply(optList)
	require.Equal(t, uint32(repAck), typ)
	return c
}

// stuckClient sends large reads and never reads a reply.
func stuckClient(t *testing.T, ts *testServer) *client {
	c := dial(t, ts)
	c.connect("")
	for range 64 {
		c.request(cmdRead, 0, 0, 1<<20, nil)
	}
	return c
}

// TestStuckClientDoesNotStallOthers checks that another client is served
// while the server's send to a client that reads none of its replies waits
// for it. The write timeout is an hour, so that the send still waits when
// the other client is done, however slow the machine: with a timeout of
// 200 ms the stuck connection was dropped before the other client's first
// reply, even on an idle machine under -race, and a wait that stalled the
// others until the timeout went unnoticed. Here a completion goroutine that
// waited for the stuck client would keep the other client's replies for the
// hour, and its reads fail on their deadline of a minute.
func TestStuckClientDoesNotStallOthers(t *testing.T) {
	ts := startServer(t, serverConfig{size: 1 << 20, tune: func(s *Server) {
		s.WriteTimeout = time.Hour
	}})
	stuck := stuckClient(t, ts)
	waitStack(t, "nbd.writeProgressing", "runtime_pollWait") // the send to it waits
	c := dial(t, ts)
	c.connect("")
	requireServedBesideStuck(t, ts, c, 50, stuck)
}

// requireServedBesideStuck has c write and read back n blocks while the
// server's send to stuck waits for it, and requires that the stuck
// connection was not dropped meanwhile. It then closes stuck's end, which
// fails the send that waits for it (for the write timeout otherwise), and
// waits until that connection has ended.
func requireServedBesideStuck(t *testing.T, ts *testServer, c *client, n int, stuck *client) {
	t.Helper()
	for i := range n {
		require.Zero(t, c.write(uint64(i)*4096, pattern(byte(i), 4096), 0))
		errno, data := c.read(uint64(i)*4096, 4096)
		require.Zero(t, errno)
		require.Equal(t, pattern(byte(i), 4096), data)
	}
	found, _ := ts.findLog("sending replies")
	require.False(t, found, "the stuck connection was dropped before the other client was served")
	require.NoError(t, stuck.nc.Close())
	ts.waitLog("sending replies")
}

// TestStuckClientDropped checks that the write timeout drops a client that
// reads none of its replies: reading its connection then ends in EOF (or a
// reset) after the replies sent before.
func TestStuckClientDropped(t *testing.T) {
	ts := startServer(t, serverConfig{size: 1 << 20, tune: func(s *Server) {
		s.WriteTimeout = 200 * time.Millisecond
	}})
	// No reply goes out, so no send can time out, until the stuck
	// client's 64 requests are all in: a slow reader (the race detector,
	// four processors) was otherwise dropped with fewer submitted, and
	// waitSubmitted waited for ever.
	release := ts.exec.holdWork()
	stuck := stuckClient(t, ts)
	ts.exec.waitSubmitted(64)
	release()
	ts.waitLog("sending replies")
	_, err := io.Copy(io.Discard, stuck.nc)
	if err != nil {
		require.True(t, isReset(err), "%v", err)
	}
}

// narrowSendListener gives every accepted TCP connection a send buffer of
// 8 KiB, so that what the server writes reaches the client about as fast
// as the client reads it.
type narrowSendListener struct{ net.Listener }

func (l narrowSendListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err == nil {
		err = nc.(*net.TCPConn).SetWriteBuffer(8 << 10)
	}
	return nc, err
}

// pacedWindow is the receive buffer of the clients of the slow-reader
// tests (TestSlowClientIsNotDropped, startSlowTLS). A few KiB would
// often leave it no room for a whole segment of the loopback's 64 KiB MSS,
// so that it advertises a zero window; the server then learns of the room a
// read makes from its probes alone, whose interval doubles while the window
// stays closed, and on a loaded machine it takes nothing for seconds. This
// still holds little of the 8 MiB the tests send.
const pacedWindow = 256 << 10

// pacedReader reads at most 4 KiB at a time, 2 ms apart: a client on a
// slow link, which keeps reading.
type pacedReader struct{ r io.Reader }

func (p pacedReader) Read(b []byte) (int, error) {
	time.Sleep(2 * time.Millisecond)
	return p.r.Read(b[:min(len(b), 4<<10)])
}

// TestSlowClientIsNotDropped checks that a client which keeps reading its
// replies, only slowly, is served however long its replies take in all: the
// write timeout drops a client that takes nothing for that long, not one
// whose queue of replies (up to the budget, 64 MiB by default) takes longer
// than the timeout to go through its link. Here 8 MiB of replies, which
// the client reads in at least 2048 reads 2 ms apart (over 4 s), go out in
// one send of the writer goroutine, with a timeout of 2.5 s: on a loaded
// machine the client may well take nothing for over a second, which a
// timeout of 1 s took for a client that stopped reading.
func TestSlowClientIsNotDropped(t *testing.T) {
	ts := startServer(t, serverConfig{size: 1 << 20, tcp: true,
		listen: func(l net.Listener) net.Listener { return narrowSendListener{l} },
		tune:   func(s *Server) { s.WriteTimeout = 2500 * time.Millisecond }})
	c := dialWindow(t, ts, pacedWindow)
	c.connect("")
	c.br = bufio.NewReader(pacedReader{c.nc})
	const n = 8
	resume := ts.exec.pauseDelivery() // one batch: the replies go out in one send
	want := map[uint64]bool{}
	for range n {
		want[c.request(cmdRead, 0, 0, 1<<20, nil)] = true
	}
	ts.exec.waitCompleted(n)
	resume()
	requireKeptForReplies(t, ts, c, want)
}

// requireKeptForReplies reads one 1 MiB reply of pattern(0, 1<<20) for each
// cookie in want, and checks that the server did not drop the connection.
func requireKeptForReplies(t *testing.T, ts *testServer, c *client, want map[uint64]bool) {
	t.Helper()
	for len(want) > 0 {
		cookie, errno, data := c.reply()
		require.True(t, want[cookie])
		delete(want, cookie)
		require.Zero(t, errno)
		require.Equal(t, pattern(0, 1<<20), data)
	}
	found, _ := ts.findLog("sending replies")
	require.False(t, found, "the connection was dropped")
}

func TestShutdownDeadlineClosesStuckClients(t *testing.T) {
	ts := startServer(t, serverConfig{size: 1 << 20, tune: func(s *Server) {
		s.WriteTimeout = time.Hour
	}})
	stuck := stuckClient(t, ts)
	ts.exec.waitSubmitted(64)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, ts.srv.Shutdown(ctx), context.DeadlineExceeded)
	_, err := io.Copy(io.Discard, stuck.nc)
	if err != nil {
		require.True(t, isReset(err), "%v", err)
	}
}

func TestExecutorRefusingClosesConnection(t *testing.T) {
	ts := startServer(t, serverConfig{})
	c := dial(t, ts)
	c.connect("")
	ts.exec.close()
	c.request(cmdRead, 0, 0, 4096, nil)
	c.expectEOF()
}

// TestSteadyStateDoesNotAllocate checks that serving a request allocates
// nothing once buffers and requests are recycled.
func TestSteadyStateDoesNotAllocate(t *testing.T) {
	ts := startServer(t, serverConfig{size: 1 << 20})
	c := dial(t, ts)
	c.connect("")
	requireNoAllocsPerRead(t, c, replyHeaderLen+4096, 16)
}

// requireNoAllocsPerRead sends rounds of depth 4 KiB reads at once on a
// connection in transmission, each answered with replyLen bytes, and checks
// that they allocate nothing once buffers and requests are recycled.
func requireNoAllocsPerRead(t *testing.T, c *client, replyLen, depth int) {
	t.Helper()
	req := make([]byte, requestHeaderLen*depth)
	for i := range depth {
		h := req[i*requestHeaderLen:]
		binary.BigEndian.PutUint32(h, magicRequest)
		binary.BigEndian.PutUint16(h[6:], cmdRead)
		binary.BigEndian.PutUint64(h[8:], uint64(i))
		binary.BigEndian.PutUint64(h[16:], uint64(i)*4096)
		binary.BigEndian.PutUint32(h[24:], 4096)
	}
	reply := make([]byte, depth*replyLen)
	round := func() {
		_, err := c.nc.Write(req)
		if err == nil {
			_, err = io.ReadFull(c.br, reply)
		}
		if err != nil {
			panic(err)
		}
	}
	for range 100 {
		round()
	}
	const rounds = 500
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range rounds {
		round()
	}
	runtime.ReadMemStats(&after)
	perRequest := float64(after.Mallocs-before.Mallocs) / float64(rounds*depth)
	t.Logf("%.3f allocations per request", perRequest)
	// The race detector makes sync.Pool drop a share of what is put
	// back, so only a loose bound holds under it.
	limit := 0.02
	if raceEnabled {
		limit = 2
	}
	require.Less(t, perRequest, limit)
}

// A Shutdown that begins while a TCP connection closed in negotiation
// discards its client's input (after NBD_OPT_ABORT, with the replies to
// the options before it still queued for a client that keeps sending) does
// not cut that short either: the replies still arrive.
func TestShutdownDuringAbortLingerKeepsReplies(t *testing.T) {
	holdLinger(t)
	name := strings.Repeat("x", 4000)
	ts := startServer(t, serverConfig{size: 1 << 20, tcp: true, name: name, tune: func(s *Server) {
		s.HandshakeTimeout = time.Hour // which bounds the linger of a connection closed in negotiation
	}})
	c := dialSmallWindow(t, ts)
	c.greet(clientFlagFixedNewstyle)
	const lists = 16 // 64 KiB of replies, more than the client's window
	var b []byte
	for _, o := range append(make([]uint32, lists), optAbort) {
		if o == 0 {
			o = optList
		}
		b = binary.BigEndian.AppendUint64(b, magicOption)
		b = binary.BigEndian.AppendUint32(b, o)
		b = binary.BigEndian.AppendUint32(b, 0)
	}
	c.send(b)
	shut := shutdownDuringLinger(t, ts, c)
	expectListsThenAbort(t, c, lists, name)
	c.expectEOF()
	require.NoError(t, <-shut)
}

// A Shutdown whose ctx has already ended when no connection is left to
// close has nothing to cut short: it returns nil, as when it begins before
// ctx ends, not ctx's error at random.
func TestShutdownWithNothingToCloseIgnoresEndedContext(t *testing.T) {
	ts := startServer(t, serverConfig{})
	c := dial(t, ts)
	c.connect("")
	c.request(cmdDisc, 0, 0, 0, nil)
	c.expectEOF()
	waitForgotten(t, ts)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, ts.srv.Shutdown(ctx))
}

// shutdownDuringLinger has c go on sending while its connection lingers,
// begins a Shutdown once the server discards c's input, and has c close its
// side once Shutdown has stopped every connection. It returns Shutdown's
// result, to come.
func shutdownDuringLinger(t *testing.T, ts *testServer, c *client) <-chan error {
	t.Helper()
	stop, wrote := make(chan struct{}), make(chan error, 1)
	go func() {
		junk := make([]byte, 16<<10)
		for {
			select {
			case <-stop:
				wrote <- c.nc.(*net.TCPConn).CloseWrite()
				return
			default:
			}
			if _, err := c.nc.Write(junk); err != nil {
				wrote <- err
				return
			}
		}
	}()
	waitStack(t, "nbd.(*conn).linger", "waitRead") // the replies written, the input discarded
	shut := make(chan error, 1)
	go func() { shut <- ts.srv.Shutdown(context.Background()) }()
	waitClosing(t, ts) // Shutdown has stopped every connection
	close(stop)
	require.NoError(t, <-wrote, "the client could send until it closed its side")
	return shut
}
