package threadpool_test

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A Callback that panics out of RunCompletions was delivered: Stats must count
// it, and the callbacks its batch delivered before it.
func TestStatsCountPanickingCallback(t *testing.T) {
	noLeaks(t)
	p, ta := newOneWorkerExternal(t)
	_, err := p.Submit(func() error { return nil }, ta.cb(0))
	require.NoError(t, err)
	batchOfThree(t, p, ta, func(error) { panic("boom") })
	waitReadable(t, p.Fd())
	require.Panics(t, func() { p.RunCompletions() })
	s := p.Stats()
	require.Equal(t, uint64(2), s.Delivered, "request 0 and the panicking callback")
	require.Equal(t, uint64(1), s.Drains)
	require.Equal(t, uint64(2), s.MaxDrain)
	require.NoError(t, ta.requireOnce(t, 0))
}
