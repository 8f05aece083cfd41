package nbd

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxKeptOutput is the largest output buffer kept for reuse after a send;
// a larger one (left by big reads) is dropped so an idle connection does
// not pin it.
const maxKeptOutput = 4 << 20

// outbox collects one connection's replies and sends them.
//
// Completion callbacks append replies to pending. Flush, run once per
// batch, sends them with one non-blocking write(2) from the completion
// goroutine; whatever the socket does not take at once is handed to the
// connection's writer goroutine through queue, and from then on, until
// queue is empty again, the writer goroutine alone writes to the socket, so
// replies keep their order and the completion goroutine never waits for a
// slow client. The writer goroutine writes with a deadline; a failed write
// marks the outbox failed, and later replies are dropped.
//
// The connection's reader goroutine may also send a reply it produced
// itself (see conn.serveInline), through send with its own replyBuf and
// rawWriter, but only while no request of the connection is in flight: then
// the completion goroutine has nothing to send and the socket is free unless
// the writer goroutine is still busy, which send checks under mu.
//
// Over TLS every byte goes through the tls.Conn (c.rw). The completion
// goroutine queues every batch for the writer goroutine, which encrypts it
// and sends its records in one write. The reader goroutine encrypts its own
// replies, owning the socket meanwhile as the writer goroutine does (busy),
// and writes the records to the socket without waiting, as it writes a
// plain reply; the records the socket does not take wait in the TLS
// connection (corkConn) and the socket passes to the writer goroutine,
// which sends them first (tlsRest). Records crypto/tls makes from inside the
// reader's Read (the answer to a KeyUpdate) go the same way (tlsRecords).
// So the reader never waits for a client that may itself be waiting to send
// the rest of its requests.
type outbox struct {
	c       *conn // set by init, then read-only
	overTLS bool  // set by init, then read-only: the connection runs TLS

	pending replyBuf  // completion goroutine only; replies not yet sent or queued
	w       rawWriter // completion goroutine only

	mu      sync.Mutex
	queue   []byte        // guarded by mu; bytes for the writer goroutine, in order
	queued  grant         // guarded by mu; budget held by queue, and by the records tlsRest stands for
	busy    bool          // guarded by mu; the writer goroutine (or sendTLS) owns the socket
	failed  bool          // guarded by mu; a send failed, replies are dropped
	tlsRest bool          // guarded by mu; records the reader encrypted wait in c.rw, to go before queue (see sendTLS)
	wake    chan struct{} // capacity 1; tells the writer goroutine queue (or tlsRest) has data
	quit    chan struct{} // closed by the connection when no reply is left
}

// replyBuf is a run of encoded replies and the budget they hold until they
// are sent. Each replyBuf belongs to one goroutine.
type replyBuf struct {
	b    []byte
	held grant
}

// reset empties the buffer after its replies were sent, queued or
// dropped.
func (rb *replyBuf) reset() {
	rb.held = grant{}
	if cap(rb.b) > maxKeptOutput {
		rb.b = nil
		return
	}
	rb.b = rb.b[:0]
}

// appendReply appends r's reply (and read data): simple, or structured
// where negotiated.
func (rb *replyBuf) appendReply(r *request) {
	if r.usesChunks() {
		rb.appendChunks(r)
		return
	}
	var h [replyHeaderLen]byte
	binary.BigEndian.PutUint32(h[0:], magicSimpleReply)
	binary.BigEndian.PutUint32(h[4:], r.errno)
	binary.BigEndian.PutUint64(h[8:], r.cookie)
	rb.b = append(rb.b, h[:]...)
	if r.typ == cmdRead && r.errno == 0 {
		rb.b = append(rb.b, r.payload()...)
	}
	rb.held.add(grant{reqs: 1, bytes: r.grant})
}

// rawWriter writes to the socket without waiting, through its
// syscall.RawConn. Each rawWriter belongs to one goroutine.
type rawWriter struct {
	raw syscall.RawConn       // the socket's descriptor; nil where there is none, or for the completion goroutine over TLS
	tls bool                  // the reader goroutine's writer over TLS: send encrypts through c.rw (see sendTLS)
	fn  func(fd uintptr) bool // w.write bound once, so writes do not allocate
	b   []byte                // what write is sending
	n   int                   // how much of b write has sent
}

// init prepares w for c. Without TLS, send writes replies straight to the
// socket. Over TLS (c.rw is not c.nc) every byte must be encrypted by c.rw:
// the completion goroutine's writer (encrypts false) has no descriptor, and
// send hands every reply to the writer goroutine; the reader goroutine's
// (encrypts true) encrypts its replies and writes the records to the
// socket (see sendTLS).
func (w *rawWriter) init(c *conn, encrypts bool) {
	w.fn = w.write
	if c.rw != c.nc {
		if !encrypts {
			return
		}
		w.tls = true
	}
	if sc, ok := c.nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			w.raw = rc
		}
	}
}

func (o *outbox) init(c *conn) {
	o.c = c
	_, o.overTLS = c.rw.(*tlsConn)
	o.w.init(c, false)
	o.wake = make(chan struct{}, 1)
	o.quit = make(chan struct{})
}

// Flush sends the replies appended since the last Flush. It runs on the
// completion goroutine, deferred by the callbacks of one batch, and never
// blocks on the socket.
func (o *outbox) Flush() {
	o.send(&o.pending, &o.w)
}

// send sends rb's replies with w, or hands them to the writer goroutine if
// it is busy or the socket does not take them all at once, and empties rb.
// It blocks on the socket only over TLS, with the reader's writer, where the
// socket has no descriptor (see sendTLS). The caller must own the
// right to write to the socket when the writer goroutine is idle: the
// completion goroutine always, the reader goroutine while no request is
// in flight.
func (o *outbox) send(rb *replyBuf, w *rawWriter) {
	if len(rb.b) == 0 {
		return
	}
	o.mu.Lock()
	switch {
	case o.failed:
		o.mu.Unlock()
		o.c.budget.release(rb.held)
		rb.reset()
		return
	case o.busy || (w.raw == nil && !w.tls):
		o.enqueueLocked(rb, rb.b)
		o.mu.Unlock()
		rb.reset()
		return
	case w.tls:
		o.busy = true // the socket is ours until sendTLS is done
		o.mu.Unlock()
		o.sendTLS(rb, w)
		return
	}
	o.mu.Unlock()
	// The writer goroutine is idle and only the caller can make it busy,
	// so the socket is ours for this write.
	n := w.writeNow(rb.b)
	if n == len(rb.b) {
		o.c.budget.release(rb.held)
		rb.reset()
		return
	}
	// The socket is full (or failing: the writer goroutine will see the
	// error again and report it).
	o.mu.Lock()
	o.enqueueLocked(rb, rb.b[n:])
	o.mu.Unlock()
	rb.reset()
}

// sendTLS sends rb's replies through TLS with w, the reader goroutine's
// writer, and empties rb. The caller has set busy, which keeps the writer
// goroutine off the socket. The replies are encrypted at once and their
// records written to the socket without waiting (tlsConn.writeNow), so that
// the reader goes on reading requests: a client may send a whole batch
// before it reads a reply, and wait, its send blocked, for the reader to
// read it. The records the socket does not take wait in c.rw; the socket
// then passes, busy, to the writer goroutine, which sends them first, and
// the budget rb held goes with them. Otherwise sendTLS clears busy, or
// hands the writer goroutine what was queued meanwhile. Where the socket
// has no descriptor (w.raw is nil) the reader writes through TLS, waiting
// for the client at most the write timeout, as the writer goroutine does.
func (o *outbox) sendTLS(rb *replyBuf, w *rawWriter) {
	var rest bool
	var err error
	if w.raw != nil {
		rest, err = o.c.rw.(*tlsConn).writeNow(rb.b, w)
	} else {
		err = o.writeBlocking(rb.b)
	}
	o.mu.Lock()
	if rest && err == nil && !o.failed {
		o.tlsRest = true
		o.queued.add(rb.held)
		rb.held = grant{}
		// busy stays set: the socket passes to the writer goroutine.
		o.wakeWriterLocked()
		o.mu.Unlock()
		rb.reset()
		return
	}
	o.mu.Unlock()
	o.c.budget.release(rb.held)
	rb.reset()
	if err != nil {
		o.fail(err)
	}
	o.mu.Lock()
	o.busy = false
	if len(o.queue) > 0 && !o.failed {
		o.wakeWriterLocked()
	}
	o.mu.Unlock()
}

// enqueueLocked hands b, the unsent end of rb's replies, with the budget
// rb holds, to the writer goroutine. o.mu must be held.
func (o *outbox) enqueueLocked(rb *replyBuf, b []byte) {
	if len(o.queue) == 0 && len(b) == len(rb.b) {
		o.queue, rb.b = rb.b, o.queue[:0]
	} else {
		o.queue = append(o.queue, b...)
	}
	o.queued.add(rb.held)
	rb.held = grant{}
	if !o.busy {
		o.wakeWriterLocked()
	}
}

// wakeWriterLocked gives the socket to the writer goroutine, which must be
// idle, and wakes it. o.mu must be held.
func (o *outbox) wakeWriterLocked() {
	o.busy = true
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// writeNow writes as much of b as the socket takes without waiting and
// returns how much that was.
func (w *rawWriter) writeNow(b []byte) int {
	// An error (the socket failed or was closed) stops the write short:
	// the writer goroutine, handed the rest, meets it again and reports it.
	w.b, w.n = b, 0
	_ = w.raw.Write(w.fn)
	n := w.n
	w.b = nil
	return n
}

// write is the body of writeNow, called with the socket's descriptor
// held. It returns true so the runtime never parks waiting for room.
func (w *rawWriter) write(fd uintptr) bool {
	for w.n < len(w.b) {
		n, err := rawWrite(int(fd), w.b[w.n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			break
		}
		w.n += n
	}
	return true
}

// writeLoop is the connection's writer goroutine. It sends what Flush
// queued until the connection closes quit.
func (o *outbox) writeLoop() {
	var spare []byte
	for {
		quit := false
		select {
		case <-o.wake:
		case <-o.quit:
			// Records the reader handed over (tlsRecords) hold no
			// budget: they may still wait.
			quit = true
		}
		for {
			o.mu.Lock()
			if o.failed || (len(o.queue) == 0 && !o.tlsRest) {
				o.busy = false
				o.mu.Unlock()
				break
			}
			q, g := o.queue, o.queued
			o.queue, o.queued, o.tlsRest = spare[:0], grant{}, false
			o.mu.Unlock()
			// Over TLS, records the reader left go first (corkConn);
			// q may then be empty.
			err := o.writeBlocking(q)
			o.c.budget.release(g)
			if cap(q) <= maxKeptOutput {
				spare = q
			} else {
				spare = nil
			}
			if err != nil {
				o.fail(err)
			}
		}
		if quit {
			return
		}
	}
}

// tlsRecords tells the writer goroutine that records made outside its sends
// wait in the TLS connection (corkConn.handTo), to go before queue. Any
// goroutine that does not hold mu.
func (o *outbox) tlsRecords() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.failed {
		return // dropped with the other replies
	}
	o.tlsRest = true
	if !o.busy {
		o.wakeWriterLocked()
	}
}

// writeBlocking writes b, waiting for the client at most the server's
// write timeout: a client that takes part of b within it, reading slowly
// rather than not at all, gets another timeout for the rest. Over TLS the
// records are written whole once encrypted, and the socket beneath TLS gets
// the further timeouts (tlsConn.writeWithin): a TLS connection whose own
// write timed out cannot write again. The goroutine that set busy only: the
// writer goroutine, or the reader in sendTLS.
func (o *outbox) writeBlocking(b []byte) error {
	nc := o.c.rw
	timeout := o.c.srv.writeTimeout()
	var err error
	if o.overTLS {
		_, err = nc.(*tlsConn).writeWithin(b, timeout)
	} else {
		err = writeProgressing(nc, b, timeout)
	}
	// Clear the deadline so that it cannot fail a later non-blocking
	// write from the completion goroutine.
	if derr := nc.SetWriteDeadline(time.Time{}); err == nil {
		err = derr
	}
	o.boundStopping() // after the clear: see boundStopping
	return err
}

// writeProgressing writes b to nc, waiting for the client at most timeout at
// a time: a write that times out after the client took part of b gets
// another timeout for the rest; once a whole timeout passes with nothing
// taken, it fails. It leaves the last deadline set.
func writeProgressing(nc net.Conn, b []byte, timeout time.Duration) error {
	for {
		if err := nc.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
			return err
		}
		n, err := nc.Write(b)
		b = b[n:]
		if n == 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
	}
}

// boundStopping gives the socket of a stopping TLS connection a write
// deadline (the server's write timeout from now), for the writes the reader
// goroutine makes inside crypto/tls: its answer to a client's KeyUpdate,
// which has no deadline of its own and would wait forever for a client that
// stopped reading, holding Shutdown. abort calls it once it has set
// stopping, and writeBlocking after it cleared its own deadline, so one of
// them sets the bound last. Over TLS no write depends on the socket having
// no deadline: the completion goroutine hands every reply to the writer
// goroutine, every blocking send sets its own deadline first, and the
// records of a reply the reader writes without waiting, if the deadline has
// passed, go to the writer goroutine (see sendTLS). While the writer
// goroutine runs, the reader hands it those answers (corkConn.handTo), so
// this bounds only what crypto/tls writes outside that time.
func (o *outbox) boundStopping() {
	if o.overTLS && o.c.stopping.Load() {
		_ = o.c.nc.SetWriteDeadline(time.Now().Add(o.c.srv.writeTimeout()))
	}
}

// hasFailed reports whether a send failed. Any goroutine.
func (o *outbox) hasFailed() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.failed
}

// fail drops every queued reply and stops the connection's reader: once a
// send failed, the stream of replies is broken.
func (o *outbox) fail(err error) {
	o.mu.Lock()
	already := o.failed
	o.failed = true
	g := o.queued
	o.queue, o.queued, o.tlsRest = o.queue[:0], grant{}, false
	o.mu.Unlock()
	o.c.budget.release(g)
	if !already {
		o.c.srv.logf("nbd: %s: sending replies: %v", o.c.nc.RemoteAddr(), err)
		o.c.abort()
	}
}
