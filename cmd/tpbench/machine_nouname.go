//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package main

// kernel returns "": uname is read only where golang.org/x/sys/unix has it.
func kernel() string { return "" }
