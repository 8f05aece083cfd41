//go:build !linux

package nbd

import "golang.org/x/sys/unix"

// syncData makes the file's written data durable.
func syncData(fd int) error { return unix.Fsync(fd) }

// punchHole is not supported here: trimming is a no-op.
func punchHole(fd int, off, length int64) error { return unix.EOPNOTSUPP }

// zeroRange is not supported here: zeroes are written instead.
func zeroRange(fd int, off, length int64) error { return unix.EOPNOTSUPP }
