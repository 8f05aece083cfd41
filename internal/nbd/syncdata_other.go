//go:build !linux && !darwin

package nbd

import "golang.org/x/sys/unix"

// syncData makes the file's written data durable.
func syncData(fd int) error { return unix.Fsync(fd) }
