package nbd

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// TLSMode says whether a Server offers TLS through NBD_OPT_STARTTLS and
// whether it insists on it. The modes mean what nbdkit's --tls=off, on and
// require mean.
type TLSMode int

const (
	// TLSOff offers no TLS: NBD_OPT_STARTTLS gets NBD_REP_ERR_POLICY and
	// the client goes on in plain text.
	TLSOff TLSMode = iota
	// TLSOn lets each client choose: NBD_OPT_STARTTLS upgrades the
	// connection, and a client that never sends it is served in plain text.
	TLSOn
	// TLSRequire serves nothing in plain text: until the client has
	// upgraded, every option but NBD_OPT_STARTTLS and NBD_OPT_ABORT gets
	// NBD_REP_ERR_TLS_REQD, NBD_OPT_EXPORT_NAME closes the connection, and
	// nothing about the export is sent.
	TLSRequire
)

// String returns the mode's name as ParseTLSMode accepts it.
func (m TLSMode) String() string {
	switch m {
	case TLSOff:
		return "off"
	case TLSOn:
		return "on"
	case TLSRequire:
		return "require"
	}
	return fmt.Sprintf("TLSMode(%d)", int(m))
}

// ParseTLSMode returns the mode named "off", "on" or "require", or an
// error for any other string.
func ParseTLSMode(s string) (TLSMode, error) {
	for _, m := range []TLSMode{TLSOff, TLSOn, TLSRequire} {
		if s == m.String() {
			return m, nil
		}
	}
	return TLSOff, fmt.Errorf("nbd: TLS mode %q: want off, on or require", s)
}

// checkTLS reports a TLS setting the server cannot serve with.
func (s *Server) checkTLS() error {
	switch s.TLS {
	case TLSOff:
		return nil
	case TLSOn, TLSRequire:
	default:
		return fmt.Errorf("nbd: unknown %v", s.TLS)
	}
	c := s.TLSConfig
	if c == nil || (len(c.Certificates) == 0 && c.GetCertificate == nil && c.GetConfigForClient == nil) {
		return fmt.Errorf("nbd: TLS %v needs a TLSConfig with a certificate", s.TLS)
	}
	return nil
}

// tlsRequired answers an option sent before the upgrade that TLSRequire
// demands. NBD_OPT_EXPORT_NAME cannot be refused, so it closes the
// connection; the other options get NBD_REP_ERR_TLS_REQD, with no detail
// of the export.
func (n *negotiation) tlsRequired(opt uint32) (done, ok bool) {
	if opt == optExportName {
		n.c.srv.logf("nbd: %s: NBD_OPT_EXPORT_NAME without TLS, disconnecting", n.c.nc.RemoteAddr())
		return false, false
	}
	return false, n.refuse(opt, repErrTLSReqd, "TLS is required: send NBD_OPT_STARTTLS first")
}

// startTLS answers NBD_OPT_STARTTLS. On success the connection carries
// TLS from then on and the negotiation starts over on it: everything
// agreed in plain text is forgotten, as the protocol asks. It reports
// false when the connection must close: the client sent more after the
// option (plain text that would otherwise be taken as sent under TLS), or
// the handshake failed. The handshake is bounded by the deadline of the
// whole negotiation, set on the connection before it began, and by the one
// Shutdown sets (see conn.stop); a handshake that Shutdown ends logs
// nothing, as other connections that Shutdown ends do.
func (n *negotiation) startTLS(data []byte) bool {
	c := n.c
	switch {
	case len(data) != 0:
		return n.refuse(optStartTLS, repErrInvalid, "NBD_OPT_STARTTLS takes no data")
	case c.srv.TLS == TLSOff:
		return n.refuse(optStartTLS, repErrPolicy, "TLS is not enabled on this server")
	case n.tlsOn:
		return n.refuse(optStartTLS, repErrInvalid, "TLS is already on")
	}
	if c.br.Buffered() != 0 {
		c.srv.logf("nbd: %s: data sent after NBD_OPT_STARTTLS before its reply, disconnecting", c.nc.RemoteAddr())
		return false
	}
	if !n.reply(optStartTLS, repAck, nil) || n.bw.Flush() != nil {
		return false
	}
	cork := newCorkConn(c.nc)
	tc := tls.Server(cork, c.srv.TLSConfig)
	if err := tc.Handshake(); err != nil {
		// Shutdown closes the socket once its ctx ends; before that, the
		// bound it set on the stopping negotiation ends the handshake.
		byShutdown := errors.Is(err, net.ErrClosed) ||
			(c.stopping.Load() && errors.Is(err, os.ErrDeadlineExceeded))
		if !byShutdown {
			c.srv.logf("nbd: %s: TLS handshake: %v", c.nc.RemoteAddr(), err)
		}
		return false
	}
	c.rw = &tlsConn{Conn: tc, cork: cork}
	c.br.Reset(&c.src) // now reading c.rw, the TLS connection
	n.bw.Reset(c.rw)
	*n = negotiation{c: c, bw: n.bw, fixed: n.fixed, noZeroes: n.noZeroes, scratch: n.scratch, tlsOn: true}
	// Structured replies and the metadata context are negotiated state too,
	// kept on the connection for the transmission phase.
	c.ext = extensions{}
	return true
}

// tlsConn is a connection after NBD_OPT_STARTTLS. Each Write sends the
// records it makes in one write to the socket (see corkConn), so one
// batch of replies is still one send.
type tlsConn struct {
	*tls.Conn
	cork *corkConn
}

// Write encrypts b and sends the records in one write, after any that
// writeNow left.
func (t *tlsConn) Write(b []byte) (int, error) {
	return t.cork.writeThrough(t.Conn, b, 0)
}

// writeWithin is Write with a write timeout, for writeBlocking: each write
// of records to the socket waits for the client at most timeout, and one
// that times out after the client took some of them gets another timeout
// for the rest (see corkConn.writeRaw).
func (t *tlsConn) writeWithin(b []byte, timeout time.Duration) (int, error) {
	return t.cork.writeThrough(t.Conn, b, timeout)
}

// writeNow encrypts b and writes the records to the socket with w without
// waiting for the client; rest reports records left for the next Write.
func (t *tlsConn) writeNow(b []byte, w *rawWriter) (rest bool, err error) {
	return t.cork.writeNow(t.Conn, b, w)
}

// close ends the connection: the TLS session first, with close_notify,
// when one runs and sending has not failed, in transmission or in
// negotiation (a close_notify that cannot be sent gives up after a few
// seconds, or at once when Shutdown has closed the socket), then, over
// TCP, the sending side (see linger), then the socket. Serve goroutine
// only.
func (c *conn) close() {
	if !c.sendFailed && !c.out.hasFailed() {
		if tc, ok := c.rw.(*tlsConn); ok {
			if !c.transmitting {
				// crypto/tls gives close_notify a write timeout of its
				// own (5 s): not past the negotiation's bounds.
				tc.cork.closeBy = c.negotiationEnd
			}
			_ = tc.Conn.CloseWrite() // fails, sending nothing, before the handshake ends
		}
		c.linger()
	}
	_ = c.nc.Close()
}

// corkConn is the socket under a server's tls.Conn. TLS writes each record
// (at most 16 KiB of data) with its own Write; while corked, corkConn
// gathers them instead, and writeThrough (or writeNow) sends them together.
// Records that writeNow could not send at once stay in pending until the
// writer goroutine sends them (outbox.tlsRest); a record made meanwhile (the
// reader's answer to a KeyUpdate) joins them there, so it goes after them,
// and so does one made while writeThrough sends, which does not hold mu
// while it waits for the client.
type corkConn struct {
	net.Conn

	mu      sync.Mutex
	corked  bool      // guarded by mu
	sending bool      // guarded by mu; writeThrough is writing records without mu
	sent    sync.Cond // uses mu; signalled when writeThrough takes pending or ends
	buf     []byte    // guarded by mu; records gathered while corked
	pending []byte    // guarded by mu; records made earlier and not sent yet
	handOff func()    // guarded by mu; set while the writer goroutine runs (see handTo)

	closeBy func() time.Time // serve goroutine only, set by conn.close in negotiation: the latest write deadline
}

// SetWriteDeadline sets the socket's write deadline, no later than closeBy
// says once conn.close has set it.
func (c *corkConn) SetWriteDeadline(t time.Time) error {
	if c.closeBy != nil {
		if end := c.closeBy(); t.IsZero() || t.After(end) {
			t = end
		}
	}
	return c.Conn.SetWriteDeadline(t)
}

// handTo makes Write, from then on, keep the records it is given in pending
// and call f, which tells the writer goroutine to send them, rather than
// write them to the socket itself; nil makes it write them again. A record
// made outside the writer goroutine's sends (the reader's answer to a
// KeyUpdate, from inside Read) would otherwise wait for room in the socket,
// with no deadline, while the client may be waiting for the reader to read
// its requests before it reads anything.
func (c *corkConn) handTo(f func()) {
	c.mu.Lock()
	c.handOff = f
	c.mu.Unlock()
}

// maxSendingHeld bounds the records that Write adds to pending while
// writeThrough sends: a client that floods KeyUpdates while the writer
// goroutine waits for it to read would otherwise grow pending, one answer
// for each, for as long as the write timeout. Past it, Write waits for that
// send.
const maxSendingHeld = 64 << 10

// newCorkConn returns the corkConn over nc.
func newCorkConn(nc net.Conn) *corkConn {
	c := &corkConn{Conn: nc}
	c.sent.L = &c.mu
	return c
}

// Write keeps b for writeThrough while corked; while records wait, a send
// is on or the writer goroutine runs, it adds b to the records pending, for
// the writer goroutine to send; otherwise (in negotiation, or once the
// writer goroutine has ended) it sends b.
func (c *corkConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.sending && !c.corked && len(c.pending) >= maxSendingHeld {
		c.sent.Wait()
	}
	if c.corked {
		c.buf = append(c.buf, b...)
		return len(b), nil
	}
	if len(c.pending) > 0 || c.sending || c.handOff != nil {
		// b goes after the records that wait (those writeNow left, for
		// the writer goroutine, which owns the socket until it has sent
		// them: outbox.tlsRest) or that writeThrough sends, and, while
		// the writer goroutine runs, to it (see handTo), which sends it
		// with a deadline and fails the connection if it cannot.
		// Written here, from another goroutine (the reader's answer to
		// a KeyUpdate, inside Read), it would wait for the client with
		// no deadline and without the writer goroutine knowing, and
		// crypto/tls keeps the error of that answer to itself. While
		// writeThrough sends, it sends b next, in the same call.
		c.pending = append(c.pending, b...)
		if c.handOff != nil && !c.sending {
			c.handOff()
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// cork makes c gather the records a write through the tls.Conn makes.
func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// uncorkLocked stops gathering and returns the records to send: those
// pending, then those gathered, which it moves to pending. c.mu must be
// held.
func (c *corkConn) uncorkLocked() []byte {
	c.corked = false
	if len(c.pending) == 0 {
		c.pending, c.buf = c.buf, c.pending
	} else {
		c.pending = append(c.pending, c.buf...)
	}
	c.buf = keepOutput(c.buf)
	return c.pending
}

// writeThrough writes b to w, the tls.Conn over c, and sends the records
// it made in one write, after those pending (b may be empty: then only
// those). Records other goroutines make meanwhile (a TLS 1.3 key update
// answered by the reader) join them in order: while it waits for the
// client, writeThrough does not hold mu, so that the reader, answering a
// KeyUpdate, adds its record to pending and goes on reading requests rather
// than wait for a client that may be waiting for it to read; such records go
// next. After a failed write they are dropped with the rest. A timeout
// above zero extends the socket's write deadline while the client takes
// the records (see writeRaw).
func (c *corkConn) writeThrough(w io.Writer, b []byte, timeout time.Duration) (int, error) {
	var n int
	var err error
	if len(b) > 0 {
		c.cork()
		n, err = w.Write(b)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sending = true
	for out := c.uncorkLocked(); len(out) > 0; {
		c.pending = nil // records made while out is written (rare) go here
		c.sent.Broadcast()
		c.mu.Unlock()
		werr := c.writeRaw(out, timeout)
		c.mu.Lock()
		if werr != nil {
			err = errors.Join(err, werr)
		}
		if werr != nil || len(c.pending) == 0 {
			c.pending = out // its buffer, for reuse
			break
		}
		out = c.pending
	}
	c.sending = false
	c.sent.Broadcast()
	c.pending = keepOutput(c.pending)
	return n, err
}

// writeRaw writes out, records already made, to the socket. With a timeout
// above zero it writes as writeBlocking does for a plain-text client
// (writeProgressing): a write that times out after the client took part of
// out gets another timeout for the rest. The records are written
// beneath the tls.Conn, which never sees the timeout: a tls.Conn whose own
// write timed out cannot write again. With no timeout it writes under the
// deadline the socket has.
func (c *corkConn) writeRaw(out []byte, timeout time.Duration) error {
	if timeout > 0 {
		return writeProgressing(c.Conn, out, timeout)
	}
	_, err := c.Conn.Write(out)
	return err
}

// writeNow writes b to w, the tls.Conn over c, and sends the records it
// made with raw, a rawWriter on the socket under c, without waiting. What
// the socket does not take stays pending, and rest reports it.
func (c *corkConn) writeNow(w io.Writer, b []byte, raw *rawWriter) (rest bool, err error) {
	c.cork()
	_, err = w.Write(b)
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.uncorkLocked()
	if err != nil {
		c.pending = keepOutput(c.pending)
		return false, err
	}
	n := raw.writeNow(out)
	if n == len(out) {
		c.pending = keepOutput(c.pending)
		return false, nil
	}
	c.pending = c.pending[:copy(c.pending, out[n:])]
	return true, nil
}

// keepOutput empties b for reuse, or drops it if it grew large.
func keepOutput(b []byte) []byte {
	if cap(b) > maxKeptOutput {
		return nil
	}
	return b[:0]
}
