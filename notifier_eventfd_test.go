package threadpool_test

import (
	"encoding/binary"
	"testing"

	"github.com/batchio/threadpool"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// saturate brings an eventfd's counter to its maximum, so that the next
// signal write fails with EAGAIN; it fails with EAGAIN itself when the
// counter is not zero.
func saturate(fd int) error {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], 0xfffffffffffffffe)
	_, err := unix.Write(fd, b[:])
	return err
}

// EAGAIN from a saturated counter means a wake-up is already readable: it is
// no failure, and the completion is delivered.
func TestWakeWriteEAGAINSaturatedCounter(t *testing.T) {
	if !threadpool.EventfdNotifier {
		t.Skip("a Notifier is a pipe pair here: only an eventfd has a counter to saturate")
	}
	noLeaks(t)
	t.Run("external", func(t *testing.T) {
		p := newPool(t, threadpool.WithExternalLoop(), threadpool.WithMaxWorkers(1))
		require.NoError(t, saturate(p.Fd()))
		ta := newTally(1)
		_, err := p.Submit(func() error { return nil }, ta.cb(0))
		require.NoError(t, err)
		published(t, p) // its write met the saturated counter
		require.Equal(t, 1, p.RunCompletions())
		require.NoError(t, ta.requireOnce(t, 0))
		require.False(t, p.MissedWakeup())
		require.False(t, readable(t, p.Fd()), "RunCompletions read the counter back to zero")
		s := threadpool.LoopNotifier(p).Stats()
		require.Zero(t, s.WriteErrors)
		require.Equal(t, uint64(1), s.Writes)
	})
	t.Run("eventfd", func(t *testing.T) {
		p := newPool(t, threadpool.WithEventfdLoop())
		nt := threadpool.LoopNotifier(p)
		// Saturate just before each real write, which then meets EAGAIN
		// unless the loop read the counter in between.
		threadpool.SetWriteFault(nt, func() error { _ = saturate(nt.Fd()); return nil })
		const n = 20
		ta := newTally(n)
		for i := range n {
			_, err := p.Submit(func() error { return nil }, ta.cb(i))
			require.NoError(t, err)
			ta.wait(1)
		}
		require.NoError(t, p.Close())
		require.Zero(t, nt.Stats().WriteErrors)
		require.Nil(t, nt.LastWriteError())
	})
}
