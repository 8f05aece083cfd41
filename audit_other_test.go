//go:build !linux

package threadpool_test

import "testing"

// The descriptor audit counts /proc/self/fd, which only Linux has.
func TestAuditFdsAndGoroutines(t *testing.T) {
	t.Skip("the descriptor audit reads /proc/self/fd, which only Linux has")
}

// openFds reports -1: there is no /proc/self/fd to count.
func openFds(testing.TB) int { return -1 }
