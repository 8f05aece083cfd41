//go:build !linux || pipenotifier

package threadpool

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"syscall"
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
// Close has closed the pipe's write end: the write fails before it reaches
// write(2). It does nothing, as a Notify after Close does, and is no write
// error.
func TestPipeNotifyRacingCloseIsNoWriteError(t *testing.T) {
	n, err := NewNotifier()
	require.NoError(t, err)
	// Close as far as its first step: the flag set, the write end closed.
	require.False(t, n.closed.Swap(true))
	require.NoError(t, n.ev.sys.w.Close())
	n.ev.signal() // the racing Notify's write
	require.NoError(t, n.ev.sys.r.Close())
	require.Zero(t, n.Stats().WriteErrors)
	require.NoError(t, n.LastWriteError())
	require.False(t, n.Missed())
}

// A write in flight when Close begins (a Notify racing with it) still finds
// the pipe's read end open: Close closes the write end first, which waits
// for the write, and only then the read end. Closing the read end first
// made such a write fail with EPIPE and raise SIGPIPE, which a program that
// subscribes to the signal then received from the pool.
func TestPipeCloseLetsAWriteInFlightFindTheReader(t *testing.T) {
	n, err := NewNotifier()
	require.NoError(t, err)
	in, proceed := make(chan struct{}), make(chan struct{})
	release := sync.OnceFunc(func() { close(proceed) })
	t.Cleanup(release) // should an assertion fail, the write and Close end
	var werr error
	n.ev.writeFn = func(fd uintptr) bool { // the write, held in flight
		close(in)
		<-proceed
		_, werr = syscall.Write(int(fd), oneByte)
		return true
	}
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		n.ev.signal()
	}()
	<-in
	closed := make(chan error, 1)
	go func() { closed <- n.Close() }()
	// Close goes as far as it can: until it waits, in a Close of the
	// write end, for the write in flight to let go of it.
	deadline := time.Now().Add(time.Minute) // a failure, not a wait: Close waits at once
	for !goroutineWaitsIn("threadpool.(*event).close(", "internal/poll.(*FD).Close(") {
		require.True(t, time.Now().Before(deadline), "Close never waited for the write in flight")
		runtime.Gosched()
	}
	require.NoError(t, n.ev.rc.Control(func(uintptr) {}), "the read end is still open")
	release()
	<-wrote
	require.NoError(t, werr, "the write in flight reached the reader")
	require.NoError(t, <-closed)
}

// goroutineWaitsIn reports whether some goroutine is blocked with both
// frames on its stack.
func goroutineWaitsIn(frames ...string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		all := strings.Contains(g, "[semacquire")
		for _, f := range frames {
			all = all && strings.Contains(g, f)
		}
		if all {
			return true
		}
	}
	return false
}
