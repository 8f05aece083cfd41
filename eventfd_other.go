//go:build !linux || pipenotifier

package threadpool

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// eventSys is a Notifier's non-blocking pipe pair, for systems without
// eventfd: a signal is one byte written to w, taking it reads r empty. Both
// ends are close-on-exec and registered with the netpoller by os.Pipe. The
// build tag pipenotifier selects it on Linux too, so that its tests run there.
type eventSys struct {
	r, w *os.File
	rfd  int      // the read end's number, for Fd
	buf  [64]byte // bytes read back; consumer only
}

var oneByte = []byte{1}

// eventfdNotifier reports that a Notifier is an eventfd: not here, where it
// is a pipe pair.
const eventfdNotifier = false

func (e *event) open(n *Notifier) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	e.n, e.sys.r, e.sys.w = n, r, w
	if e.rc, err = r.SyscallConn(); err == nil {
		e.wc, err = w.SyscallConn()
	}
	if err == nil {
		// Not File.Fd: that would put the descriptor back in blocking mode.
		err = e.rc.Control(func(fd uintptr) { e.sys.rfd = int(fd) })
	}
	if err != nil {
		r.Close()
		w.Close()
		return err
	}
	e.writeFn = func(fd uintptr) bool {
		err := writeFault(e.n)
		if err == nil {
			_, err = syscall.Write(int(fd), oneByte)
		}
		if errors.Is(err, syscall.EAGAIN) { // pipe full: the reader has a signal anyway
			err = nil
		}
		e.n.wrote(err)
		return true
	}
	e.consumeFn = func(fd uintptr) bool {
		e.got = readFault(e.n) == nil && e.readAll(fd) > 0
		return true
	}
	e.waitFn = func(fd uintptr) bool {
		if err := readFault(e.n); err != nil {
			e.err = os.NewSyscallError("read", err)
			return true
		}
		n := e.readAll(fd)
		if n == 0 && e.err == nil {
			return false // park in the netpoller until readable
		}
		return true
	}
	return nil
}

// readAll empties the pipe and returns how many bytes it read.
func (e *event) readAll(fd uintptr) int {
	total := 0
	for {
		n, err := syscall.Read(int(fd), e.sys.buf[:])
		if n > 0 {
			total += n
		}
		switch {
		case errors.Is(err, syscall.EAGAIN):
			return total
		case err != nil:
			e.err = os.NewSyscallError("read", err)
			return total
		case n == 0:
			// End of file: the write end was closed under the Notifier.
			e.err = os.ErrClosed
			return total
		case n < len(e.sys.buf):
			return total
		}
	}
}

func (e *event) setReadDeadline(t time.Time) { _ = e.sys.r.SetReadDeadline(t) }
func (e *event) fd() int                     { return e.sys.rfd }

// close closes the write end first: it waits for a write in flight (a
// Notify racing with Close), which therefore still finds the read end open,
// and a later one fails before it reaches write(2). Closing the read end
// first made such a write fail with EPIPE and raise SIGPIPE, a signal the
// program did not cause, seen by any program that subscribes to it. A Wait
// blocked on the read end then reads end of file: ErrClosed.
func (e *event) close() error {
	err := e.sys.w.Close()
	if rerr := e.sys.r.Close(); err == nil {
		err = rerr
	}
	return err
}
