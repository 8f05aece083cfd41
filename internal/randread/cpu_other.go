//go:build !unix

package randread

import "time"

// ProcessCPU returns 0: the process's CPU time is read only on Unix systems.
func ProcessCPU() time.Duration { return 0 }
