package nbd

import (
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The system calls of a connection's fast path never wait: its socket is
// non-blocking (a read with nothing to read returns EAGAIN and the caller
// waits through the runtime's poller; a full socket takes part of a write
// and the rest goes to the writer goroutine) and preadv2 with RWF_NOWAIT
// returns EAGAIN rather than wait for the disk. They are made as raw system
// calls, which do not tell the scheduler that the goroutine entered a
// system call: that bookkeeping (entersyscall and exitsyscall, waking the
// runtime's monitor thread, which may hand the P to another thread while
// the call runs) serves calls that may block. What it saved is measured in
// cmd/tpnbd/README.md.

// rawRead is read(2) on a non-blocking descriptor.
func rawRead(fd int, b []byte) (int, error) { return rawIO(unix.SYS_READ, fd, b) }

// rawWrite is write(2) on a non-blocking descriptor.
func rawWrite(fd int, b []byte) (int, error) { return rawIO(unix.SYS_WRITE, fd, b) }

// rawIO makes read(2) or write(2), trap, of b on fd.
func rawIO(trap uintptr, fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// preadNoWait is preadv2(RWF_NOWAIT) of one buffer: it reads from the page
// cache and fails with EAGAIN instead of waiting for the disk.
func preadNoWait(fd int, b []byte, off int64) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var iov unix.Iovec
	iov.Base = &b[0]
	iov.SetLen(len(b))
	lo := uintptr(off)
	hi := uintptr(uint64(off) >> (unix.SizeofLong*8 - 1) >> 1) // 0 on 64-bit systems
	n, _, e := unix.RawSyscall6(unix.SYS_PREADV2, uintptr(fd), uintptr(unsafe.Pointer(&iov)), 1, lo, hi, unix.RWF_NOWAIT)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// waitReadable waits up to d for fd to become readable, in ppoll(2), and
// reports whether it did (or has an error to read). Unlike the calls above
// it is made through the scheduler, as a call that may block: the runtime
// may give the goroutine's processor to another thread meanwhile. (Made
// raw, it measured no better over TCP loopback, and a little worse for
// lone reads.)
func waitReadable(fd int, d time.Duration) bool {
	ts := unix.NsecToTimespec(int64(d))
	pfd := unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	n, _, e := unix.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	return e == 0 && n > 0
}
