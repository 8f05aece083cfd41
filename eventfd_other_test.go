//go:build !linux || pipenotifier

package threadpool

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A pipe Notifier whose write end was closed under it reads end of file:
// Wait ends with ErrClosed instead of parking on a pipe that never again
// becomes readable anew.
func TestPipeNotifierWaitEndsAtEndOfFile(t *testing.T) {
	n, err := NewNotifier()
	require.NoError(t, err)
	defer n.Close()
	require.NoError(t, n.ev.sys.w.Close())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.ErrorIs(t, n.Wait(ctx), ErrClosed)
}
