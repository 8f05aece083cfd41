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

// A Notify that passed the closed check just before Close may write once
// Close has closed the pipe's read end and not yet its write end: the write
// fails with EPIPE. It does nothing, as a Notify after Close does, and is no
// write error.
func TestPipeNotifyRacingCloseIsNoWriteError(t *testing.T) {
	n, err := NewNotifier()
	require.NoError(t, err)
	// Close as far as its first step: the flag set, the read end closed.
	require.False(t, n.closed.Swap(true))
	require.NoError(t, n.ev.sys.r.Close())
	n.ev.signal() // the racing Notify's write
	require.NoError(t, n.ev.sys.w.Close())
	require.Zero(t, n.Stats().WriteErrors)
	require.NoError(t, n.LastWriteError())
	require.False(t, n.Missed())
}
