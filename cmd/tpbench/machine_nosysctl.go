//go:build !(darwin || freebsd)

package main

// sysctlCPUModel returns "": elsewhere the model comes from /proc/cpuinfo.
func sysctlCPUModel() string { return "" }
