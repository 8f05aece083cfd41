//go:build !linux

package nbd

import "syscall"

// osTemporaryAcceptErrnos are the errors of accept(2) that temporaryAccept
// reports as passing besides temporaryAcceptErrnos: none here (ENONET is
// Linux's alone).
var osTemporaryAcceptErrnos []syscall.Errno
