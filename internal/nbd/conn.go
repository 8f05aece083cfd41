package nbd

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"time"
)

// unixSendBuffer is the send buffer asked for on a Unix socket: the
// replies to a client's full queue of small requests (64 reads of 4 KiB,
// with the kernel's overhead per write) fit in it several times over,
// where the usual default of 208 KiB fills up.
const unixSendBuffer = 1 << 20

// conn is one client connection. Its serve goroutine negotiates, then reads
// requests and submits them; its writer goroutine (see outbox) sends what
// the completion goroutine could not send at once.
type conn struct {
	srv  *Server  // read-only
	nc   net.Conn // read-only; the socket, closed by serve when it returns
	rw   net.Conn // what the protocol runs over: nc, or TLS over it; set by serve before transmission
	exp  *Export  // read-only
	exec Executor // read-only

	src sockReader             // what br reads from; serve goroutine only
	br  *bufio.Reader          // serve goroutine only
	hdr [requestHeaderLen]byte // serve goroutine only

	// Serve goroutine only, for lockstep: requests read since the reader
	// last ran out of buffered requests, and how many times in a row it
	// found one request then, with nothing left in flight.
	sinceWait, loneRun int

	budget budget     // see budget
	out    outbox     // see outbox
	ext    extensions // see extensions

	// Reader goroutine only, with Server.Inline: see serveInline.
	inline  replyBuf
	inlineW rawWriter
	cached  cachedReader

	transmitting bool        // guarded by srv.mu; negotiation is over
	lingering    bool        // guarded by srv.mu; linger discards the client's input
	stopping     atomic.Bool // set once the connection must stop reading requests (or options, see stop)
	negotiateBy  time.Time   // read-only, set at accept: when negotiation must be over
	sendFailed   bool        // serve goroutine only: a send of negotiation failed (see close)

	stopBy atomic.Int64 // UnixNano of the bound boundNegotiation set, or 0; see negotiationEnd
}

// serve runs the connection from handshake to close, on its own goroutine.
func (c *conn) serve() {
	defer c.srv.forget(c)
	defer c.close()
	c.rw = c.nc
	c.src.c = c
	c.br = bufio.NewReaderSize(&c.src, 64<<10)
	if err := c.nc.SetDeadline(c.negotiateBy); err != nil {
		return
	}
	if c.stopping.Load() {
		c.boundNegotiation() // Shutdown began before the deadline above was set
	}
	if !c.negotiate() {
		return
	}
	if err := c.nc.SetDeadline(time.Time{}); err != nil {
		return
	}
	c.budget.init(c.srv.maxRequests(), c.srv.maxBytes())
	if uc, ok := c.nc.(*net.UnixConn); ok {
		// Room for a full queue of small replies, so that a batch is
		// written at once rather than handed to the writer goroutine
		// whenever the client falls behind. (TCP sizes its own.) c.nc
		// is the socket under TLS too, where the writer goroutine's
		// one write per batch of records then returns without waiting.
		_ = uc.SetWriteBuffer(unixSendBuffer)
	}
	c.out.init(c)
	if tc, ok := c.rw.(*net.TCPConn); ok {
		c.src.useRaw(tc)
	}
	if c.srv.Inline {
		c.inlineW.init(c, true)
		c.cached.init(c.exp.file)
	}
	if !c.srv.startTransmission(c) {
		return
	}
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.out.writeLoop()
	}()
	tc, overTLS := c.rw.(*tlsConn)
	if overTLS {
		tc.cork.handTo(c.out.tlsRecords)
	}
	c.readRequests()
	// Every submitted request still gets its reply (or has it dropped if
	// the socket failed) before the connection closes.
	c.budget.drain()
	close(c.out.quit)
	<-writerDone
	if overTLS {
		tc.cork.handTo(nil) // close sends close_notify itself
	}
}

// stop makes the connection stop reading new requests; the ones already
// read are answered. One still negotiating (unless it lingers, see linger)
// answers the option its client sends next, or has sent and not had
// answered, with NBD_REP_ERR_SHUTDOWN, as the protocol asks of a server
// that is shutting down, and then closes; it waits for that option, and
// for its client to take the replies to the options before, at most
// shutdownOptionWait, and not past the negotiation's time limit. The
// caller holds srv.mu.
func (c *conn) stop() {
	if !c.transmitting {
		if !c.lingering && c.stopping.CompareAndSwap(false, true) {
			c.boundNegotiation() // once: a later Shutdown does not extend the wait
		}
		return
	}
	c.abort()
}

// shutdownOptionWait bounds how long a connection still negotiating when
// Shutdown begins waits for its client's next option (see stop).
var shutdownOptionWait = time.Second

// boundNegotiation makes the reads and writes of a stopping connection in
// negotiation end within shutdownOptionWait, or at the negotiation's time
// limit if that comes first: a write too, since a client that sent options
// and reads none of their replies would otherwise keep the negotiation
// waiting for room in the socket until its time limit. Any goroutine.
func (c *conn) boundNegotiation() {
	end := time.Now().Add(shutdownOptionWait)
	if c.negotiateBy.Before(end) {
		end = c.negotiateBy
	}
	c.stopBy.Store(end.UnixNano())
	_ = c.nc.SetDeadline(end)
}

// negotiationEnd returns when a connection still negotiating must be done:
// the bound a Shutdown set (boundNegotiation, never past the time limit),
// or else its time limit.
func (c *conn) negotiationEnd() time.Time {
	if ns := c.stopBy.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return c.negotiateBy
}

// abort stops the reader goroutine at its next read. Any goroutine.
func (c *conn) abort() {
	c.stopping.Store(true)
	c.budget.close()
	_ = c.nc.SetReadDeadline(time.Now())
	c.out.boundStopping()
}

// lingerTimeout bounds how long a closing TCP connection reads and
// discards what its client still sends (see linger). Tests whose steps may
// take longer on a loaded machine raise it.
var lingerTimeout = 2 * time.Second

// linger shuts down the sending side of a TCP connection, whose replies
// have all been written, and reads and discards what the client still
// sends until it closes its side, lingerTimeout passes, or Shutdown's
// context ends and closes the socket. A TCP socket closed with input it
// has not read makes Linux reset the connection, which throws away the
// replies still queued for the client: one that kept sending after the
// server stopped reading (Shutdown, a request the server refuses to read
// past) would lose replies already due. A Unix socket delivers what it
// queued either way. A connection closed in negotiation (after
// NBD_OPT_ABORT, say, whose reply and those of the options before it may
// still be queued) lingers too, but not past the negotiation's time limit.
// Serve goroutine only (which alone writes c.transmitting, so it reads it
// without srv.mu).
//
// A Shutdown that begins meanwhile sets a read deadline in the past on every
// connection past negotiation (abort): linger sets its own again and goes
// on. It leaves a connection closed in negotiation lingering too, where it
// closes the others still negotiating (see stop).
func (c *conn) linger() {
	tc, ok := c.nc.(*net.TCPConn)
	if !ok || tc.CloseWrite() != nil {
		return
	}
	c.srv.startLinger(c) // a Shutdown that closed the socket before ends the reads below at once
	end := time.Now().Add(lingerTimeout)
	if !c.transmitting && c.negotiateBy.Before(end) {
		end = c.negotiateBy // the negotiation's time limit bounds its connection's life
	}
	for time.Now().Before(end) {
		if tc.SetReadDeadline(end) != nil {
			return
		}
		_, err := io.Copy(io.Discard, tc)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return // the client closed its side, or the socket failed or was closed
		}
	}
}

// readRequests reads requests until the client disconnects, sends
// NBD_CMD_DISC, breaks the protocol, or the connection is stopped.
func (c *conn) readRequests() {
	defer c.sendInline()
	for !c.stopping.Load() {
		if c.br.Buffered() < len(c.hdr) {
			// About to wait for the client, which may be waiting for
			// the replies served inline before it sends more.
			c.sendInline()
			// Only a raw reader waits for a lockstep client: the
			// others skip the bookkeeping.
			c.src.lockstep = c.src.raw != nil && c.lockstep()
		}
		_, err := io.ReadFull(c.br, c.hdr[:])
		c.src.lockstep = false
		c.sinceWait++
		if err != nil {
			c.readError(err)
			return
		}
		r := getRequest(c)
		if !r.decodeHeader(&c.hdr) {
			r.recycle()
			c.srv.logf("nbd: %s: bad request magic, disconnecting", c.nc.RemoteAddr())
			return
		}
		if r.typ == cmdDisc {
			r.recycle()
			return
		}
		r.check(c.exp)
		// A write too large to read cannot be skipped safely: its error
		// reply is sent, then the connection closes. (r belongs to the
		// Executor once submitted, so decide before.)
		tooLarge := r.typ == cmdWrite && r.length > MaxPayload
		length := r.length
		if !c.submit(r) {
			return
		}
		if tooLarge {
			c.srv.logf("nbd: %s: write of %d bytes, disconnecting", c.nc.RemoteAddr(), length)
			return
		}
	}
}

// lockstepRun is how many lone requests in a row make a client lockstep.
const lockstepRun = 4

// lockstep reports whether the reader, which has read every buffered
// request, is to wait for the client's next one before it parks (see
// sockReader): the client sends one request at a time and waits for its
// reply (the last lockstepRun times the reader ran out of buffered
// requests it had read one since the time before, and now nothing of the
// connection's is in flight), it is the server's only connection in
// transmission, and the program has more than one processor. The wait
// costs a system call and keeps a thread, with its processor until the
// runtime takes it back; where several connections share the processors
// (fio with four connections at iodepth 1 or 64), each of their readers
// sees lone requests too, and waiting cost them 4% to 21% of their
// requests a second. Serve goroutine only.
func (c *conn) lockstep() bool {
	lone := c.sinceWait == 1
	c.sinceWait = 0
	if !lone || !c.budget.idle() {
		c.loneRun = 0
		return false
	}
	c.loneRun++
	return c.loneRun >= lockstepRun && c.srv.transmitting.Load() == 1 && runtime.GOMAXPROCS(0) > 1
}

// submit takes budget for r, reads its payload and hands it to the
// Executor. It reports false if the connection must stop reading.
// After a true result r belongs to the Executor.
func (c *conn) submit(r *request) bool {
	var need int64
	switch {
	case r.typ == cmdWrite && r.length <= MaxPayload:
		need = int64(r.length) // read even when refused, to stay in step
	case r.typ == cmdRead && r.errno == 0:
		need = int64(r.length)
	case r.typ == cmdBlockStatus && r.errno == 0:
		need = descriptorBufLen
	}
	// Replies served inline and not yet sent hold budget that only this
	// goroutine gives back, and a run of them is kept short.
	if c.inline.held.reqs >= inlineRun || c.budget.spent(c.inline.held, need) {
		c.sendInline()
	}
	ok, held := c.budget.acquire(need)
	if !ok { // stopped while waiting: Shutdown, or the replies' stream broke
		c.refuseStopping(r)
		return false
	}
	// Nothing in flight but the replies this goroutine served and has not
	// sent yet (which it may send before it serves r).
	idle := held == c.inline.held.reqs
	r.grant = need
	if need > 0 {
		r.buf = getBuf(int(need))
	}
	if r.typ == cmdWrite && need > 0 {
		// The client sends the rest of a request without waiting for
		// replies, so the ones served inline can wait for the next header.
		if _, err := io.ReadFull(c.br, r.payload()); err != nil {
			c.budget.release(grant{reqs: 1, bytes: need})
			c.readError(err)
			if c.stopping.Load() { // Shutdown cut the payload short
				c.refuseStopping(r)
			} else {
				r.recycle()
			}
			return false
		}
	}
	if idle && c.serveInline(r) {
		return true
	}
	// The completion goroutine may send this connection's replies from
	// now on: the socket must be free of this goroutine's.
	c.sendInline()
	if err := c.exec.Submit(r.workFn, r.doneFn); err != nil {
		c.budget.release(grant{reqs: 1, bytes: need})
		r.recycle()
		c.srv.logf("nbd: %s: submit: %v", c.nc.RemoteAddr(), err)
		return false
	}
	return true
}

// refuseStopping answers r, whose header was read but which the stopped
// connection will not serve, with NBD_ESHUTDOWN, so that Shutdown's promise
// holds: every request read is answered. Its payload, if any, stays
// unread; the connection closes after the reply. The reply goes through
// the Executor like any refused request, since requests of the connection
// may be in flight; it takes one request of budget past the bounds, which
// Shutdown's wait for the budget to drain then covers.
func (c *conn) refuseStopping(r *request) {
	r.errno, r.msg = errShutdown, ""
	r.grant = 0
	if r.buf != nil {
		putBuf(r.buf)
		r.buf = nil
	}
	c.budget.force()
	c.sendInline()
	if err := c.exec.Submit(r.workFn, r.doneFn); err != nil {
		c.budget.release(grant{reqs: 1})
		r.recycle()
		c.srv.logf("nbd: %s: submit: %v", c.nc.RemoteAddr(), err)
	}
}

// serveInline answers r on the reader goroutine itself, without handing it
// to the Executor (with Server.Inline), if it is a write without FUA or a
// read shorter than sparseReadMin whose data is all in the page cache
// (Linux only); it reports false, having done nothing, otherwise. The
// reply goes into c.inline, which sendInline sends: the reader sends it
// before it waits for the client's next request, before it hands a
// request to the Executor, and after a run of inlineRun replies, so the
// replies of pipelined requests go out together, as the completion
// goroutine batches the others.
//
// The caller must have found no request of the connection in flight but
// the ones this goroutine served and has not sent: only then may this
// goroutine write to the socket (see outbox). Such a request costs its
// system call and a copy here, where the Executor would add two hand-offs
// between goroutines: a lone one has nothing to be batched with, a write
// copies into the page cache under the file's lock, one at a time anyway,
// and a cached read does not wait. A read that would wait for the disk,
// and every request behind it while it is in the Executor, goes to the
// Executor, whose workers wait in parallel. Over TLS this goroutine
// encrypts the replies itself and writes the records without waiting, as
// it writes plain replies (see outbox.sendTLS).
func (c *conn) serveInline(r *request) bool {
	switch {
	case !c.srv.Inline || r.errno != 0:
		return false
	case r.typ == cmdRead:
		if r.length >= sparseReadMin || !c.cached.readCached(r.payload(), int64(r.offset)) {
			return false
		}
		if c.ext.structured {
			r.spans = append(r.spans[:0], span{length: r.length})
		}
	case r.typ == cmdWrite && r.flags&cmdFlagFUA == 0:
		// A buffered write copies into the page cache; it waits only
		// when the kernel throttles dirty pages, and the client, which
		// sent nothing else, would wait for it either way.
		_ = r.work() // sets r.errno on failure
	default:
		return false
	}
	c.inline.appendReply(r)
	r.recycle()
	return true
}

// inlineRun is the most replies served inline that the reader keeps before
// it sends them.
const inlineRun = 64

// sendInline sends the replies served inline and not sent yet. Reader
// goroutine only.
func (c *conn) sendInline() { c.out.send(&c.inline, &c.inlineW) }

// readError logs a read failure that is not an ordinary end of the
// connection.
func (c *conn) readError(err error) {
	if c.stopping.Load() || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, os.ErrDeadlineExceeded) {
		return
	}
	c.srv.logf("nbd: %s: reading request: %v", c.nc.RemoteAddr(), err)
}
