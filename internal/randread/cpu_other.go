//go:build !unix

package randread

import "time"

// processCPU returns 0: the process's CPU time is read only on Unix systems.
func processCPU() time.Duration { return 0 }
