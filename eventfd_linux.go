//go:build !pipenotifier

package threadpool

import (
	"encoding/binary"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// one is the 8-byte counter increment an eventfd write carries.
var one = func() (b [8]byte) {
	binary.NativeEndian.PutUint64(b[:], 1)
	return b
}()

// eventfdNotifier reports that a Notifier is an eventfd here; the build tag
// pipenotifier makes it a pipe pair (eventfd_other.go) on Linux too.
const eventfdNotifier = true

// eventSys is a Notifier's eventfd.
type eventSys struct {
	f   *os.File // keeps the descriptor alive and registered with the netpoller
	fd  int      // the descriptor number, for Fd
	buf [8]byte  // the counter read back; consumer only
}

func (e *event) open(n *Notifier) error {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("eventfd", err)
	}
	e.n, e.sys.fd = n, fd
	e.sys.f = os.NewFile(uintptr(fd), "eventfd")
	if e.rc, err = e.sys.f.SyscallConn(); err != nil {
		e.sys.f.Close()
		return err
	}
	e.wc = e.rc
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
		err := readFault(e.n)
		if err == nil {
			_, err = unix.Read(int(fd), e.sys.buf[:])
		}
		e.got = err == nil
		return true
	}
	e.waitFn = func(fd uintptr) bool {
		err := readFault(e.n)
		if err == nil {
			_, err = unix.Read(int(fd), e.sys.buf[:])
		}
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

func (e *event) setReadDeadline(t time.Time) { _ = e.sys.f.SetReadDeadline(t) }
func (e *event) fd() int                     { return e.sys.fd }
func (e *event) close() error                { return e.sys.f.Close() }
