//go:build darwin || freebsd

package main

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// sysctlCPUModel returns the CPU's model as sysctl reports it, or "".
func sysctlCPUModel() string {
	name := "hw.model"
	if runtime.GOOS == "darwin" {
		name = "machdep.cpu.brand_string"
	}
	s, err := unix.Sysctl(name)
	if err != nil {
		return ""
	}
	return s
}
