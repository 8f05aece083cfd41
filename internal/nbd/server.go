package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrServerClosed is returned by Serve once Shutdown has begun.
var ErrServerClosed = errors.New("nbd: server closed")

// Defaults for the zero values of Server's tunables.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultWriteTimeout     = 30 * time.Second
	DefaultMaxRequests      = 256
	DefaultMaxBytes         = 64 << 20
)

// Server serves one Export to any number of connections (at most MaxConns
// at once, when set). Set its exported fields before the first Serve and do
// not change them afterwards.
type Server struct {
	// Export is the export served; required.
	Export *Export
	// Exec runs every request's I/O and delivers its completion; required.
	// It must outlive the server: shut the server down before it.
	Exec Executor
	// HandshakeTimeout bounds the whole negotiation of one connection.
	HandshakeTimeout time.Duration
	// WriteTimeout bounds how long one send may wait for a client that does
	// not read; after it the connection is dropped. A client that takes
	// part of a send within it gets another for the rest, over TLS too.
	WriteTimeout time.Duration
	// MaxRequests bounds the requests one connection may have between
	// being read and having their replies sent; the connection stops
	// reading until replies are sent.
	MaxRequests int
	// MaxBytes bounds the payload bytes one connection may hold the same
	// way (a single request up to MaxPayload always fits).
	MaxBytes int64
	// MaxConns bounds the connections open at once, negotiating, in
	// transmission or closing; 0 (or less) means no bound. With MaxBytes and
	// MaxRequests it bounds what clients can make the server hold. A
	// connection accepted while MaxConns are open is closed at once,
	// before the server's greeting, and logged: its client sees the
	// connection end.
	MaxConns int
	// SimpleRepliesOnly makes the server refuse NBD_OPT_STRUCTURED_REPLY
	// and the metadata context options with NBD_REP_ERR_UNSUP, so that
	// clients use simple replies and no block status (for comparison).
	SimpleRepliesOnly bool
	// TLS says whether NBD_OPT_STARTTLS is offered, and whether it is
	// required before anything else (see TLSMode). Unless it is TLSOff,
	// TLSConfig must hold the server's certificate.
	TLS TLSMode
	// TLSConfig configures the server side of each TLS session: its
	// certificates and, to verify clients, ClientAuth and ClientCAs.
	TLSConfig *tls.Config
	// Inline lets a connection with no request in the Executor answer, on
	// its own goroutine, a write without FUA and a read shorter than 64
	// KiB whose data is all in the page cache (preadv2 with RWF_NOWAIT;
	// Linux only), whether the request came alone or pipelined behind
	// others. Two hand-offs between goroutines would cost more than such
	// I/O: a cached read does not wait, and buffered writes to one file
	// take its lock one at a time anyway. The replies of a run of such
	// requests are sent together, before the goroutine waits for the
	// client's next request or hands a request to the Executor, and at
	// least every 64 replies. Every other request goes to the Executor,
	// and so does every request that arrives while one is there, so reads
	// that wait for the disk wait in parallel. Over TLS the connection
	// goroutine encrypts such replies itself and writes their records
	// without waiting; what the socket does not take, the writer goroutine
	// sends first.
	Inline bool
	// Logf, if set, receives one line per connection problem, and one for
	// a request whose I/O failed, at most one a second: the failures after
	// a logged one are counted into one line a second later (or at
	// Shutdown). It may be called from any goroutine, including the
	// completion goroutine and a timer's.
	Logf func(format string, args ...any)

	mu        sync.Mutex
	closing   bool                      // guarded by mu
	closed    chan struct{}             // guarded by mu; made on first use, closed by Shutdown
	listeners map[net.Listener]struct{} // guarded by mu
	conns     map[*conn]struct{}        // guarded by mu
	wg        sync.WaitGroup            // one per connection goroutine; Add under mu while !closing
	// transmitting counts the connections past negotiation, not yet
	// forgotten: written under mu, read anywhere (see conn.lockstep).
	transmitting atomic.Int32
	failures     failureLog // the log lines of failed requests
}

// Serve accepts connections on l and serves each on its own goroutines
// until l fails or Shutdown closes it, and then returns ErrServerClosed if
// Shutdown was called or else the accept error. An accept error that
// passes once resources are freed (see temporaryAccept), such as the
// process running out of file descriptors, makes it wait a little (5 ms,
// doubling with each such error in a row up to 1 s) and accept again;
// Shutdown ends that wait at once. With TLS settings it cannot serve (see
// TLSMode) it returns their error at once. Any goroutine may call it, for
// several listeners at once. Serve closes l on return.
func (s *Server) Serve(l net.Listener) error {
	if err := s.checkTLS(); err != nil {
		l.Close()
		return err
	}
	if !s.addListener(l) {
		l.Close()
		return ErrServerClosed
	}
	defer s.removeListener(l)
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			if temporaryAccept(err) {
				// Out of descriptors and the like: back off and retry.
				delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
				if !s.backoff(delay) {
					return ErrServerClosed
				}
				continue
			}
			return err
		}
		delay = 0
		c := &conn{srv: s, nc: nc, exp: s.Export, exec: s.Exec, negotiateBy: time.Now().Add(s.handshakeTimeout())}
		if ok, full := s.track(c); !ok {
			if full {
				s.logf("nbd: %s: refused: %d connections open (MaxConns)", nc.RemoteAddr(), s.MaxConns)
			}
			nc.Close()
			continue
		}
		go c.serve()
	}
}

// Shutdown stops the server. It closes the listeners and makes every
// connection in transmission stop reading requests. A connection still
// negotiating answers its client's next option with NBD_REP_ERR_SHUTDOWN
// and closes; it waits for that option, and for its client to take the
// replies to the options before, at most a second and not past the
// negotiation's time limit, and then closes without it (see conn.stop). One
// that closed itself and discards what its client still sends is left to
// finish (see conn.linger). Shutdown then waits until every request already
// read has been answered and every connection closed. A request whose
// header was read but which the connection can no longer serve (waiting for
// its budget, or for the rest of a write's payload) is answered with
// NBD_ESHUTDOWN. A TCP connection closes once its client has closed its
// side too, or lingerTimeout after its last reply, so Shutdown may wait that
// long for a client that keeps its connection open. If ctx ends (or has
// ended) while connections remain, it closes them, waits for their
// goroutines, and returns ctx's error; with none left it returns nil.
// Requests are still completed by the Executor, which must keep running
// until Shutdown returns. Any goroutine but the Executor's completion
// goroutine (which Shutdown waits for) may call Shutdown, once or more.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing {
		close(s.closedLocked()) // ends the backoff of every Serve at once
	}
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.stop()
	}
	s.mu.Unlock()
	// Once every connection is done: the failures held back.
	defer s.logHeldFailures(true)

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	cut := len(s.conns) // 0: every connection was done, ctx cut nothing short
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	<-done
	if cut == 0 {
		return nil
	}
	return ctx.Err()
}

// The shortest and the longest wait of Serve before it accepts again after
// a temporary accept error: the wait doubles with each error in a row.
var acceptBackoffMin, acceptBackoffMax = 5 * time.Millisecond, time.Second

// backoff waits d before Serve accepts again, or less if Shutdown begins
// meanwhile; it reports false in that case, when Serve must return.
func (s *Server) backoff(d time.Duration) bool {
	s.mu.Lock()
	closed := s.closedLocked()
	s.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-closed:
		return false
	}
}

// closedLocked returns the channel that Shutdown closes, made on first use.
// s.mu must be held.
func (s *Server) closedLocked() chan struct{} {
	if s.closed == nil {
		s.closed = make(chan struct{})
	}
	return s.closed
}

// temporaryAccept reports whether an Accept error passes, so that Serve
// backs off and accepts again: a timeout; the process or the system out of
// file descriptors (EMFILE, ENFILE: a burst of connections past the
// descriptor limit); the kernel out of memory for a socket (ENOBUFS,
// ENOMEM); a connection its client aborted or reset before it was
// accepted (ECONNABORTED, ECONNRESET: the net package's listeners retry
// those themselves, other listeners may pass them on); or a network error
// of the connection being accepted, which accept(2) on Linux passes on and
// says to retry like EAGAIN (ENETDOWN, EPROTO, ENOPROTOOPT, EHOSTDOWN,
// ENONET, EHOSTUNREACH, ENETUNREACH; ENONET is Linux's alone, see
// osTemporaryAcceptErrnos). It leaves out EOPNOTSUPP, which that list names
// too: accept(2) fails with it on every call when the listener's socket is
// not a stream socket (a Unix datagram socket made into a listener), so
// Serve returns it. A net.Error's Timeout is false for all of these.
func temporaryAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range temporaryAcceptErrnos {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// temporaryAcceptErrnos are the errors of accept(2) that temporaryAccept
// reports as passing.
var temporaryAcceptErrnos = append([]syscall.Errno{
	syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
	syscall.ECONNABORTED, syscall.ECONNRESET, syscall.ENETDOWN, syscall.EPROTO,
	syscall.ENOPROTOOPT, syscall.EHOSTDOWN, syscall.EHOSTUNREACH,
	syscall.ENETUNREACH,
}, osTemporaryAcceptErrnos...)

func (s *Server) addListener(l net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	if s.listeners == nil {
		s.listeners = make(map[net.Listener]struct{})
	}
	s.listeners[l] = struct{}{}
	return true
}

func (s *Server) removeListener(l net.Listener) {
	s.mu.Lock()
	delete(s.listeners, l)
	s.mu.Unlock()
	l.Close()
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// track registers a new connection; it reports false once closing, and
// false with full set when MaxConns connections are open.
func (s *Server) track(c *conn) (ok, full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false, false
	}
	if s.MaxConns > 0 && len(s.conns) >= s.MaxConns {
		return false, true
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true, false
}

// startTransmission marks c as past negotiation; it reports false once
// closing, when c must close instead.
func (s *Server) startTransmission(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	c.transmitting = true
	s.transmitting.Add(1)
	return true
}

// startLinger marks c as lingering (see conn.linger), so that Shutdown
// does not close it while it still negotiates.
func (s *Server) startLinger(c *conn) {
	s.mu.Lock()
	c.lingering = true
	s.mu.Unlock()
}

// forget unregisters a connection whose goroutines have finished.
func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	if c.transmitting {
		s.transmitting.Add(-1)
	}
	s.mu.Unlock()
	s.wg.Done()
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

func (s *Server) handshakeTimeout() time.Duration {
	return orDefault(s.HandshakeTimeout, DefaultHandshakeTimeout)
}

func (s *Server) writeTimeout() time.Duration {
	return orDefault(s.WriteTimeout, DefaultWriteTimeout)
}

func (s *Server) maxRequests() int { return orDefault(s.MaxRequests, DefaultMaxRequests) }

func (s *Server) maxBytes() int64 { return orDefault(s.MaxBytes, DefaultMaxBytes) }

func orDefault[T int | int64 | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}
