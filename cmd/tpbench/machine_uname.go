//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package main

import (
	"strings"

	"golang.org/x/sys/unix"
)

// kernel returns uname's system name, release and machine, or "".
func kernel() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return strings.Join([]string{
		unix.ByteSliceToString(u.Sysname[:]),
		unix.ByteSliceToString(u.Release[:]),
		unix.ByteSliceToString(u.Machine[:]),
	}, " ")
}
