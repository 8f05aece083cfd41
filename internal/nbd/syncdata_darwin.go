package nbd

import "golang.org/x/sys/unix"

// syncData makes the file's written data durable. On darwin fsync(2) leaves
// the data in the drive's own cache, so it asks for F_FULLFSYNC, as
// os.File.Sync does there, and falls back to fsync(2) on a file system that
// does not support it (ENOTSUP, an SMB mount say).
func syncData(fd int) error {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_FULLFSYNC, 0)
	if err == unix.ENOTSUP {
		return unix.Fsync(fd)
	}
	return err
}
