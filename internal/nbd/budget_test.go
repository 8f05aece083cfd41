package nbd

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBudgetBoundsWhatAConnectionHolds sends 4 KiB writes while the
// executor holds every request back, so that none is replied to: the
// connection submits as many as MaxRequests or MaxBytes allows, then waits
// for its budget before it submits the next, and submits the rest once the
// replies have gone out.
func TestBudgetBoundsWhatAConnectionHolds(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxReqs  int
		maxBytes int64
	}{
		{"4 requests", 4, 0},
		{"16 KiB", 0, 16 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, serverConfig{tune: func(s *Server) {
				s.MaxRequests, s.MaxBytes = tc.maxReqs, tc.maxBytes
			}})
			c := dial(t, ts)
			c.connect("")
			release := ts.exec.holdWork()
			defer release() // before the server's cleanup, if the test fails
			const n = 12
			var b []byte
			for i := range n {
				b, _ = c.appendRequest(b, cmdWrite, 0, uint64(i)*4096, 4096, pattern(byte(i), 4096))
			}
			c.send(b)
			ts.exec.waitSubmitted(4)
			waitStack(t, "nbd.(*budget).acquire", "sync.(*Cond).Wait")
			require.Equal(t, 4, ts.exec.submittedCount(), "submitted past the budget")
			release()
			for range n {
				_, errno, _ := c.reply()
				require.Zero(t, errno)
			}
			require.Equal(t, n, ts.exec.submittedCount())
		})
	}
}
