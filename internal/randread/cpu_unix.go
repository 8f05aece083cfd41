//go:build unix

package randread

import (
	"time"

	"golang.org/x/sys/unix"
)

// ProcessCPU returns the user plus system CPU time the whole process has used
// so far (getrusage RUSAGE_SELF), or 0 if it cannot be read.
func ProcessCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
