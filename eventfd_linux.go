package threadpool

import (
	"encoding/binary"
	"errors"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// one is the 8-byte counter increment an eventfd write carries.
var one = func() (b [8]byte) {
	binary.NativeEndian.PutUint64(b[:], 1)
	return b
}()

// event is a Notifier's eventfd. The RawConn callbacks are bound once in open
// so that signalling and consuming allocate nothing.
type event struct {
	n    *Notifier
	f    *os.File // keeps the descriptor alive and registered with the netpoller
	rc   syscall.RawConn
	rawf int // the descriptor number, for Fd

	writeFn   func(fd uintptr) bool
	waitFn    func(fd uintptr) bool
	consumeFn func(fd uintptr) bool

	// Consumer goroutine only.
	buf [8]byte
	got bool
	err error
}

func (e *event) open(n *Notifier) error {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("eventfd", err)
	}
	e.n, e.rawf = n, fd
	e.f = os.NewFile(uintptr(fd), "eventfd")
	if e.rc, err = e.f.SyscallConn(); err != nil {
		e.f.Close()
		return err
	}
	e.writeFn = func(fd uintptr) bool {
		err := writeFault(e.n)
		if err == nil {
			_, err = unix.Write(int(fd), one[:])
		}
		if err == unix.EAGAIN { // counter saturated: a read is pending anyway
			err = nil
		}
		e.n.wrote(err)
		return true
	}
	e.consumeFn = func(fd uintptr) bool {
		_, err := unix.Read(int(fd), e.buf[:])
		e.got = err == nil
		return true
	}
	e.waitFn = func(fd uintptr) bool {
		_, err := unix.Read(int(fd), e.buf[:])
		if err == unix.EAGAIN {
			return false // park in the netpoller until readable
		}
		if err != nil {
			e.err = os.NewSyscallError("read", err)
		}
		return true
	}
	return nil
}

func (e *event) signal() {
	if err := e.rc.Write(e.writeFn); err != nil {
		e.n.wrote(err) // the file was closed
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

func (e *event) setReadDeadline(t time.Time) { _ = e.f.SetReadDeadline(t) }
func (e *event) fd() int                     { return e.rawf }
func (e *event) close() error                { return e.f.Close() }
