//go:build !linux

package threadpool_test

import "testing"

// The descriptor audit counts /proc/self/fd, which only Linux has.
func TestAuditFdsAndGoroutines(t *testing.T) {
	t.Skip("the descriptor audit reads /proc/self/fd, which only Linux has")
}
