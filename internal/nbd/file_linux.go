package nbd

import "golang.org/x/sys/unix"

// syncData makes the file's written data durable.
func syncData(fd int) error { return unix.Fdatasync(fd) }

// punchHole deallocates a range, which then reads as zeroes.
func punchHole(fd int, off, length int64) error {
	return unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

// zeroRange makes a range read as zeroes and keeps it allocated.
func zeroRange(fd int, off, length int64) error {
	return unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}
