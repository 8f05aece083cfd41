//go:build !linux

package nbd

import (
	"os"

	"golang.org/x/sys/unix"
)

// fallocAlign returns 1: nothing here goes to fallocate.
func fallocAlign(*os.File) (int64, error) { return 1, nil }

// punchHole is not supported here: trimming is a no-op.
func punchHole(fd int, off, length int64) error { return unix.EOPNOTSUPP }

// zeroRange is not supported here: zeroes are written instead.
func zeroRange(fd int, off, length int64) error { return unix.EOPNOTSUPP }

// cachedReader would read from the page cache only; this system cannot
// tell, so every read goes the ordinary way.
type cachedReader struct{}

func (*cachedReader) init(*os.File) {}

// readCached reports false: the caller reads the ordinary way.
func (*cachedReader) readCached([]byte, int64) bool { return false }
