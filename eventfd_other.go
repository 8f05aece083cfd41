//go:build !linux

package threadpool

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// event is a Notifier's non-blocking pipe pair, for systems without eventfd:
// a signal is one byte written to w, taking it reads r empty. Both ends are
// close-on-exec and registered with the netpoller by os.Pipe.
type event struct {
	n      *Notifier
	r, w   *os.File
	rfd    int // the read end's number, for Fd
	rc, wc syscall.RawConn

	writeFn   func(fd uintptr) bool
	waitFn    func(fd uintptr) bool
	consumeFn func(fd uintptr) bool

	// Consumer goroutine only.
	buf [64]byte
	got bool
	err error
}

var oneByte = []byte{1}

func (e *event) open(n *Notifier) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	e.n, e.r, e.w = n, r, w
	if e.rc, err = r.SyscallConn(); err == nil {
		e.wc, err = w.SyscallConn()
	}
	if err == nil {
		// Not File.Fd: that would put the descriptor back in blocking mode.
		err = e.rc.Control(func(fd uintptr) { e.rfd = int(fd) })
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
		e.got = e.readAll(fd) > 0
		return true
	}
	e.waitFn = func(fd uintptr) bool {
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
		n, err := syscall.Read(int(fd), e.buf[:])
		if n > 0 {
			total += n
		}
		if errors.Is(err, syscall.EAGAIN) || (err == nil && n < len(e.buf)) {
			return total
		}
		if err != nil {
			e.err = os.NewSyscallError("read", err)
			return total
		}
		if n == 0 {
			e.err = os.ErrClosed
			return total
		}
	}
}

func (e *event) signal() {
	if err := e.wc.Write(e.writeFn); err != nil {
		e.n.wrote(err)
	}
}

func (e *event) consume() bool {
	e.got = false
	err := e.rc.Read(e.consumeFn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// A failed write kicked the consumer (Notifier.writeFailed), which
		// stops even a non-blocking read: drop the kick and read.
		e.setReadDeadline(time.Time{})
		err = e.rc.Read(e.consumeFn)
	}
	return err == nil && e.got
}

func (e *event) wait() error {
	e.err = nil
	if err := e.rc.Read(e.waitFn); err != nil {
		return err
	}
	return e.err
}

func (e *event) setReadDeadline(t time.Time) { _ = e.r.SetReadDeadline(t) }
func (e *event) fd() int                     { return e.rfd }

func (e *event) close() error {
	err := e.r.Close()
	if werr := e.w.Close(); err == nil {
		err = werr
	}
	return err
}
