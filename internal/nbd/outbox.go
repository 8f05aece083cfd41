package nbd

import (
	"encoding/binary"
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
// Completion callbacks append replies to buf. Flush, run once per batch,
// sends buf with one non-blocking write(2) from the completion goroutine;
// whatever the socket does not take at once is handed to the connection's
// writer goroutine through queue, and from then on, until queue is empty
// again, the writer goroutine alone writes to the socket, so replies keep
// their order and the completion goroutine never waits for a slow client.
// The writer goroutine writes with a deadline; a failed write marks the
// outbox failed, and later replies are dropped.
type outbox struct {
	c          *conn                 // set by init, then read-only
	raw        syscall.RawConn       // nil when the connection has no descriptor; read-only
	rawWriteFn func(fd uintptr) bool // o.rawWrite bound once; read-only

	// Completion goroutine only.
	buf  []byte // replies not yet sent or queued
	held grant  // budget held by the replies in buf
	wbuf []byte // what rawWrite is sending
	wn   int    // how much of wbuf rawWrite has sent
	werr error  // rawWrite's error

	mu     sync.Mutex
	queue  []byte        // guarded by mu; bytes for the writer goroutine, in order
	queued grant         // guarded by mu; budget held by queue
	busy   bool          // guarded by mu; the writer goroutine owns the socket
	failed bool          // guarded by mu; a send failed, replies are dropped
	wake   chan struct{} // capacity 1; tells the writer goroutine queue has data
	quit   chan struct{} // closed by the connection when no reply is left
}

func (o *outbox) init(c *conn) {
	o.c = c
	if sc, ok := c.rw.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			o.raw = rc
		}
	}
	o.rawWriteFn = o.rawWrite
	o.wake = make(chan struct{}, 1)
	o.quit = make(chan struct{})
}

// appendReply appends r's reply (and read data) to the output: simple, or
// structured where negotiated. Completion goroutine only.
func (o *outbox) appendReply(r *request) {
	if r.usesChunks() {
		o.appendChunks(r)
		return
	}
	var h [replyHeaderLen]byte
	binary.BigEndian.PutUint32(h[0:], magicSimpleReply)
	binary.BigEndian.PutUint32(h[4:], r.errno)
	binary.BigEndian.PutUint64(h[8:], r.cookie)
	o.buf = append(o.buf, h[:]...)
	if r.typ == cmdRead && r.errno == 0 {
		o.buf = append(o.buf, r.payload()...)
	}
	o.held.add(grant{reqs: 1, bytes: r.grant})
}

// Flush sends the replies appended since the last Flush. It runs on the
// completion goroutine, deferred by the callbacks of one batch, and never
// blocks on the socket.
func (o *outbox) Flush() {
	if len(o.buf) == 0 {
		return
	}
	o.mu.Lock()
	switch {
	case o.failed:
		o.mu.Unlock()
		o.c.budget.release(o.held)
		o.reset()
		return
	case o.busy || o.raw == nil:
		o.enqueueLocked(o.buf)
		o.mu.Unlock()
		o.reset()
		return
	}
	o.mu.Unlock()
	// The writer goroutine is idle and only this goroutine can make it
	// busy, so the socket is ours for this write.
	n := o.writeNow(o.buf)
	if n == len(o.buf) {
		o.c.budget.release(o.held)
		o.reset()
		return
	}
	// The socket is full (or failing: the writer goroutine will see the
	// error again and report it).
	o.mu.Lock()
	o.enqueueLocked(o.buf[n:])
	o.mu.Unlock()
	o.reset()
}

// enqueueLocked hands b, with the budget in held, to the writer goroutine.
// o.mu must be held.
func (o *outbox) enqueueLocked(b []byte) {
	if len(o.queue) == 0 && len(b) == len(o.buf) {
		o.queue, o.buf = o.buf, o.queue[:0]
	} else {
		o.queue = append(o.queue, b...)
	}
	o.queued.add(o.held)
	o.held = grant{}
	if !o.busy {
		o.busy = true
		select {
		case o.wake <- struct{}{}:
		default:
		}
	}
}

// reset empties buf after its replies were sent, queued or dropped.
func (o *outbox) reset() {
	o.held = grant{}
	if cap(o.buf) > maxKeptOutput {
		o.buf = nil
		return
	}
	o.buf = o.buf[:0]
}

// writeNow writes as much of b as the socket takes without waiting and
// returns how much that was.
func (o *outbox) writeNow(b []byte) int {
	o.wbuf, o.wn, o.werr = b, 0, nil
	if err := o.raw.Write(o.rawWriteFn); err != nil {
		o.werr = err
	}
	n := o.wn
	o.wbuf = nil
	return n
}

// rawWrite is the body of writeNow, called with the socket's descriptor
// held. It returns true so the runtime never parks waiting for room.
func (o *outbox) rawWrite(fd uintptr) bool {
	for o.wn < len(o.wbuf) {
		n, err := unix.Write(int(fd), o.wbuf[o.wn:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			o.werr = err
			break
		}
		o.wn += n
	}
	return true
}

// writeLoop is the connection's writer goroutine. It sends what Flush
// queued until the connection closes quit.
func (o *outbox) writeLoop() {
	var spare []byte
	for {
		select {
		case <-o.wake:
		case <-o.quit:
			return
		}
		for {
			o.mu.Lock()
			if len(o.queue) == 0 || o.failed {
				o.busy = false
				o.mu.Unlock()
				break
			}
			q, g := o.queue, o.queued
			o.queue, o.queued = spare[:0], grant{}
			o.mu.Unlock()
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
	}
}

// writeBlocking writes b, waiting for the client at most the server's
// write timeout. Writer goroutine only.
func (o *outbox) writeBlocking(b []byte) error {
	nc := o.c.rw
	if err := nc.SetWriteDeadline(time.Now().Add(o.c.srv.writeTimeout())); err != nil {
		return err
	}
	_, err := nc.Write(b)
	// Clear the deadline so that it cannot fail a later non-blocking
	// write from the completion goroutine.
	if derr := nc.SetWriteDeadline(time.Time{}); err == nil {
		err = derr
	}
	return err
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
	o.queue, o.queued = o.queue[:0], grant{}
	o.mu.Unlock()
	o.c.budget.release(g)
	if !already {
		o.c.srv.logf("nbd: %s: sending replies: %v", o.c.nc.RemoteAddr(), err)
		o.c.abort()
	}
}
