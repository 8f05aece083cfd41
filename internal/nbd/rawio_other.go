//go:build !linux

package nbd

import (
	"time"

	"golang.org/x/sys/unix"
)

// rawRead is read(2) on a non-blocking descriptor.
func rawRead(fd int, b []byte) (int, error) { return unix.Read(fd, b) }

// rawWrite is write(2) on a non-blocking descriptor.
func rawWrite(fd int, b []byte) (int, error) { return unix.Write(fd, b) }

// waitReadable reports false at once: only Linux waits for a lockstep
// client's next request before it parks (see sockReader).
func waitReadable(fd int, d time.Duration) bool { return false }
