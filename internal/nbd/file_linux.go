package nbd

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// fallocAlign returns the granularity fallocate accepts on f: the logical
// block size of a block device, which refuses ranges that are not whole
// blocks with EINVAL, and 1 for anything else.
func fallocAlign(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return 1, nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var size int
	var ioErr error
	if err := rc.Control(func(fd uintptr) { size, ioErr = unix.IoctlGetInt(int(fd), unix.BLKSSZGET) }); err != nil {
		return 0, err
	}
	if ioErr != nil {
		return 0, ioErr
	}
	if size <= 0 {
		return 1, nil
	}
	return int64(size), nil
}

// syncData makes the file's written data durable.
func syncData(fd int) error { return unix.Fdatasync(fd) }

// fallocate is unix.Fallocate; tests replace it to see the ranges.
var fallocate = unix.Fallocate

// punchHole deallocates a range, which then reads as zeroes.
func punchHole(fd int, off, length int64) error {
	return fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

// zeroRange makes a range read as zeroes and keeps it allocated.
func zeroRange(fd int, off, length int64) error {
	return fallocate(fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

// cachedReader reads from the page cache only (preadv2 with RWF_NOWAIT),
// for one goroutine at a time. Its method value is bound once, so a read
// does not allocate.
type cachedReader struct {
	rc  syscall.RawConn  // the export's file
	fn  func(fd uintptr) // r.read bound once
	b   []byte
	off int64
	ok  bool
}

func (r *cachedReader) init(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		r.rc = rc
		r.fn = r.read
	}
}

// readCached fills b from offset off if every byte of it is in the page
// cache, without waiting for the disk, and reports whether it did. A false
// result says nothing about the file: the caller reads it the ordinary way.
func (r *cachedReader) readCached(b []byte, off int64) bool {
	if r.rc == nil || len(b) == 0 {
		return false
	}
	r.b, r.off, r.ok = b, off, false
	_ = r.rc.Control(r.fn) // fails only without running fn: r.ok stays false
	r.b = nil
	return r.ok
}

func (r *cachedReader) read(fd uintptr) {
	for {
		n, err := preadNoWait(int(fd), r.b, r.off)
		if err == unix.EINTR {
			continue
		}
		r.ok = err == nil && n == len(r.b)
		return
	}
}
