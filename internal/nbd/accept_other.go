//go:build !linux

package nbd

import "syscall"

// osTemporaryAcceptErrnos are the errors of accept(2) this system adds to
// temporaryAcceptErrnos: none here (ENONET is
// Linux's alone).
var osTemporaryAcceptErrnos []syscall.Errno
