package randread

import "fmt"

// Mode is how the completion loop notifies a job that its requests are done.
type Mode int

const (
	// Each writes the job's eventfd once per completion: the behaviour before
	// notifications were batched.
	Each Mode = iota
	// Defer hands the job's notifier to DeferCall for every completion, so the
	// eventfd is written once per job per drained batch.
	Defer
	// Coalesce is Defer with the notifier's own pending-signal coalescing: a
	// batch whose job has not yet taken the previous signal writes nothing.
	Coalesce
)

// Modes lists every Mode, in the order the figures compare them.
var Modes = []Mode{Each, Defer, Coalesce}

var modeNames = [...]string{Each: "each", Defer: "defer", Coalesce: "coalesce"}

// String returns the mode's flag name: "each", "defer" or "coalesce".
func (m Mode) String() string {
	if m >= 0 && int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode returns the Mode named s, or an error naming the valid modes.
func ParseMode(s string) (Mode, error) {
	for m, name := range modeNames {
		if s == name {
			return Mode(m), nil
		}
	}
	return 0, fmt.Errorf("unknown mode %q (want each, defer or coalesce)", s)
}
