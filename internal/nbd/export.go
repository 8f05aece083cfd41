package nbd

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Export is one file served over NBD. Its methods that touch the file are
// blocking and are meant for the Executor's work functions; they may run on
// several goroutines at once. The *os.File stays referenced by the Export
// for as long as the Export is in use, so its descriptor cannot be closed
// under a request.
//
// Name, Description and ReadOnly may be changed only before the export is
// given to a Server.
type Export struct {
	// Name is the export name clients ask for. The empty name, which the
	// protocol calls the default export, also selects this export.
	Name string
	// Description is sent to clients that ask for it; it may be empty.
	Description string
	// ReadOnly makes the server refuse writes with NBD_EPERM.
	ReadOnly bool

	file *os.File // set by OpenExport, never changed
	size int64    // bytes, fixed at open
	// align is the granularity fallocate accepts on the file: a block
	// device's logical block size, 1 for anything else. Set by OpenExport,
	// never changed.
	align int64
}

// OpenExport opens path (read-write unless readOnly) and returns an export
// of its current size under name. The file must be a regular file or a
// block device (a symbolic link to one will do): anything else (a
// directory, a character device, a named pipe, a socket) is refused with
// an error naming what it is, without waiting to open it. The caller must
// Close the export after the servers using it have shut down.
func OpenExport(path, name string, readOnly bool) (*Export, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := exportable(path, fi.Mode()); err != nil {
		return nil, err
	}
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := openExportable(path, flag)
	if err != nil {
		return nil, err
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("size of %s: %w", path, err)
	}
	if len(name) > maxNameLen {
		f.Close()
		return nil, fmt.Errorf("export name longer than %d bytes", maxNameLen)
	}
	align, err := fallocAlign(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("block size of %s: %w", path, err)
	}
	return &Export{Name: name, ReadOnly: readOnly, file: f, size: size, align: align}, nil
}

// openExportable opens path with flag and checks, on the file it opened,
// that it can be an export (exportable), whatever path named when the
// caller looked: the file may have been replaced since. It opens without
// blocking, so that a named pipe put there meanwhile is refused at once
// rather than waited on for a writer, and puts the file back in blocking
// mode once it is known to be one that can be an export.
func openExportable(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil {
		err = exportable(path, fi.Mode())
	}
	if err == nil {
		err = setBlocking(f)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// setBlocking clears O_NONBLOCK on f's descriptor.
func setBlocking(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	cerr := rc.Control(func(fd uintptr) { err = unix.SetNonblock(int(fd), false) })
	if cerr != nil {
		return cerr
	}
	return err
}

// exportable returns an error naming what the file at path is unless mode
// is that of a regular file or a block device.
func exportable(path string, mode os.FileMode) error {
	var what string
	switch {
	case mode.IsRegular(), mode&os.ModeDevice != 0 && mode&os.ModeCharDevice == 0:
		return nil
	case mode.IsDir():
		what = "a directory"
	case mode&os.ModeCharDevice != 0:
		what = "a character device"
	case mode&os.ModeNamedPipe != 0:
		what = "a named pipe"
	case mode&os.ModeSocket != 0:
		what = "a socket"
	default:
		what = "not a regular file"
	}
	return fmt.Errorf("%s is %s: an export is a regular file or a block device", path, what)
}

// Size returns the export's size in bytes. Any goroutine.
func (e *Export) Size() int64 { return e.size }

// Close closes the file. Call it once, when no server uses the export any
// more (after Server.Shutdown has returned).
func (e *Export) Close() error { return e.file.Close() }

// Sync makes every completed write durable (fdatasync). Any goroutine,
// until Close.
func (e *Export) Sync() error {
	return e.control(syncData)
}

// flags returns the transmission flags advertised for the export. Several
// connections may safely share it (CAN_MULTI_CONN): they all write the same
// file through the same page cache, and a flush on any of them syncs the
// whole file.
func (e *Export) flags() uint16 {
	f := uint16(tfHasFlags | tfSendFlush | tfSendFUA | tfCanMultiConn)
	if e.ReadOnly {
		f |= tfReadOnly
	} else {
		f |= tfSendTrim | tfSendWriteZeroes
	}
	return f
}

// readAt fills b from offset off; a short file is an I/O error.
func (e *Export) readAt(b []byte, off int64) error {
	_, err := e.file.ReadAt(b, off)
	return err
}

// writeAt writes b at offset off.
func (e *Export) writeAt(b []byte, off int64) error {
	_, err := e.file.WriteAt(b, off)
	return err
}

// trim discards the range. Trimming is advisory, so a file system that
// cannot punch holes makes it a successful no-op, as is an empty range
// (which fallocate would refuse with EINVAL). On a block device only the
// whole logical blocks inside the range are discarded: the kernel refuses
// a range that does not start and end on block boundaries.
func (e *Export) trim(off, length int64) error {
	start, end := e.aligned(off, length)
	if start >= end {
		return nil
	}
	err := e.control(func(fd int) error { return punchHole(fd, start, end-start) })
	if errors.Is(err, unix.EOPNOTSUPP) {
		return nil
	}
	return err
}

// zero makes the range read as zeroes. With keepAllocated (NO_HOLE) the
// blocks stay allocated; otherwise they may be punched out. Where the file
// system cannot do either, zeroes are written. An empty range is a
// successful no-op (fallocate would refuse it with EINVAL). On a block
// device the whole logical blocks inside the range go to fallocate and the
// partial blocks at its ends are written with zeroes. A range past the end
// of a file that shrank under the export extends the file again, as a
// write would (see extendTo).
func (e *Export) zero(off, length int64, keepAllocated bool) error {
	if length == 0 {
		return nil
	}
	start, end := e.aligned(off, length)
	if start >= end { // no whole block: all of it is written
		return e.writeZeroes(off, length)
	}
	err := e.control(func(fd int) error {
		if keepAllocated {
			return zeroRange(fd, start, end-start)
		}
		return punchHole(fd, start, end-start)
	})
	switch {
	case errors.Is(err, unix.EOPNOTSUPP):
		start, end = off, off // the whole range is written below
	case err != nil:
		return err
	default:
		// fallocate with KEEP_SIZE leaves a file that shrank under the
		// export short of the range, which must read as zeroes.
		if err := e.extendTo(end); err != nil {
			return err
		}
	}
	if err := e.writeZeroes(off, start-off); err != nil {
		return err
	}
	return e.writeZeroes(end, off+length-end)
}

// aligned returns the part of the range of length bytes at off that starts
// and ends on multiples of e.align, as the offsets [start, end); start >=
// end when no whole block lies in the range.
func (e *Export) aligned(off, length int64) (start, end int64) {
	start = (off + e.align - 1) / e.align * e.align
	end = (off + length) / e.align * e.align
	return start, end
}

// extendTo makes the file at least end bytes long, if it is shorter (it
// shrank under the export), by writing one zero byte at end-1: the range
// fallocate made read as zeroes with KEEP_SIZE (the only way it punches
// holes) then lies within the file. It never shortens the file, so a
// write that extends it meanwhile is kept.
func (e *Export) extendTo(end int64) error {
	size, err := e.file.Seek(0, io.SeekEnd)
	if err != nil || size >= end {
		return err
	}
	return e.writeAt([]byte{0}, end-1)
}

// writeZeroes writes length zero bytes at offset off.
func (e *Export) writeZeroes(off, length int64) error {
	if length <= 0 {
		return nil
	}
	bp := getBuf(1 << 16)
	defer putBuf(bp)
	scratch := *bp
	clear(scratch)
	for length > 0 {
		n := min(length, int64(len(scratch)))
		if err := e.writeAt(scratch[:n], off); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

// control runs fn with the file's descriptor while the File holds it open,
// again as long as it fails with EINTR: a system call that a signal
// interrupted (fdatasync or fallocate on a network or FUSE file system) is
// made again, as os.File.Sync does, rather than failing the request.
func (e *Export) control(fn func(fd int) error) error {
	rc, err := e.file.SyscallConn()
	if err != nil {
		return err
	}
	var opErr error
	call := func(fd uintptr) {
		for {
			if opErr = fn(int(fd)); opErr != unix.EINTR {
				return
			}
		}
	}
	if err := rc.Control(call); err != nil {
		return err
	}
	return opErr
}

// errno maps a file error to the protocol's error values.
func errno(err error) uint32 {
	var en unix.Errno
	if !errors.As(err, &en) {
		return errIO
	}
	switch en {
	case unix.EPERM, unix.EACCES, unix.EROFS:
		return errPerm
	case unix.ENOMEM:
		return errNoMem
	case unix.EINVAL:
		return errInval
	case unix.ENOSPC, unix.EDQUOT, unix.EFBIG:
		return errNoSpc
	default:
		return errIO
	}
}
