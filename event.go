package threadpool

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// event is the descriptor side of a Notifier: an eventfd on Linux
// (eventfd_linux.go), a non-blocking pipe pair elsewhere (eventfd_other.go).
// Each platform's open binds the RawConn callbacks once, so that signalling
// and consuming allocate nothing, and provides setReadDeadline, fd and close.
type event struct {
	n      *Notifier       // written once in open
	rc, wc syscall.RawConn // read and write side; one eventfd on Linux
	sys    eventSys        // the platform's descriptors; written once in open

	writeFn   func(fd uintptr) bool // writes one signal; reports to n.wrote
	waitFn    func(fd uintptr) bool // reads the signals back, parks while none
	consumeFn func(fd uintptr) bool // reads the signals back, never parks

	// Consumer goroutine only.
	got bool  // consumeFn read a signal
	err error // waitFn's read error
}

// signal writes one signal. Any goroutine.
func (e *event) signal() {
	if err := e.wc.Write(e.writeFn); err != nil {
		e.n.wrote(err) // the descriptor was closed (by Close, or under the Notifier)
	}
}

// consume takes the pending signals without blocking and reports whether
// there were any. Consumer only.
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

// wait parks in the netpoller until a signal is pending and takes it.
// Consumer only.
func (e *event) wait() error {
	e.err = nil
	if err := e.rc.Read(e.waitFn); err != nil {
		return err
	}
	return e.err
}
