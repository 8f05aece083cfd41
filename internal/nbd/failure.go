package nbd

import (
	"errors"
	"io"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// failureLogEvery is the least time between two log lines of failed
// requests: a client that reads past the end of a file that shrank fails
// request after request, and each would be a line.
const failureLogEvery = time.Second

// failureLog rate-limits the log lines of requests whose I/O failed, over
// the whole server: the first failure is logged at once, and the ones after
// it within failureLogEvery are counted, into one line at the end of that
// time (or at Shutdown, whichever comes first).
type failureLog struct {
	mu    sync.Mutex
	next  time.Time   // guarded by mu: no line before it
	held  int         // guarded by mu: failures not logged since the last line
	timer *time.Timer // guarded by mu: logs held at next; nil while none is held
	ended bool        // guarded by mu: Shutdown logged what was held
}

// fail records that what, r's I/O ("read", "write's FUA sync"), failed
// with err: it sets r's error value and the message of its error chunk,
// and logs the failure unless one was logged less than failureLogEvery
// ago. Any goroutine that runs requests.
func (r *request) fail(what string, err error) {
	r.errno = errno(err)
	r.msg = what + ": " + failureCause(err)
	s := r.c.srv
	if s.Logf == nil {
		return
	}
	l := &s.failures
	l.mu.Lock()
	now := time.Now()
	if now.Before(l.next) || l.ended {
		l.held++
		if l.timer == nil && !l.ended {
			l.timer = time.AfterFunc(l.next.Sub(now), func() { s.logHeldFailures(false) })
		}
		l.mu.Unlock()
		return
	}
	held := l.held
	l.held, l.next = 0, now.Add(failureLogEvery)
	l.mu.Unlock()
	if held > 0 {
		s.Logf("nbd: %s: %s of %d bytes at %d failed: %v (and %d more failed since the last such line)",
			r.c.nc.RemoteAddr(), what, r.length, r.offset, err, held)
		return
	}
	s.Logf("nbd: %s: %s of %d bytes at %d failed: %v", r.c.nc.RemoteAddr(), what, r.length, r.offset, err)
}

// logHeldFailures logs how many failures were held back since the last
// line, if any. Its timer calls it at the end of failureLogEvery, and
// Shutdown (final) once every connection is done, after which failures are
// only counted.
func (s *Server) logHeldFailures(final bool) {
	l := &s.failures
	l.mu.Lock()
	if l.timer != nil {
		l.timer.Stop() // at Shutdown; a no-op for the timer's own call
		l.timer = nil
	}
	if final {
		l.ended = true
	}
	held := l.held
	l.held = 0
	if held > 0 && !final {
		l.next = time.Now().Add(failureLogEvery)
	}
	l.mu.Unlock()
	if held > 0 && s.Logf != nil {
		s.Logf("nbd: %d more requests failed since the last such line", held)
	}
}

// failureCause says why a request failed, for its client: the system's
// words for the error, without the file's name.
func failureCause(err error) string {
	var en unix.Errno
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the file ends before the export does (did it shrink?)"
	case errors.As(err, &en):
		return en.Error()
	default:
		return "input/output error"
	}
}

// commandName names a request type in messages.
func commandName(typ uint16) string {
	switch typ {
	case cmdRead:
		return "read"
	case cmdWrite:
		return "write"
	case cmdFlush:
		return "flush"
	case cmdTrim:
		return "trim"
	case cmdWriteZeroes:
		return "write zeroes"
	case cmdBlockStatus:
		return "block status"
	default:
		return "command"
	}
}
