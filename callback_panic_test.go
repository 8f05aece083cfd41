package threadpool_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchio/threadpool"
)

// A Callback that panics, without a panic handler, reaches the caller of
// RunCompletions as a *PanicError; the rest of its batch must still be
// delivered, without waiting for another completion to wake the loop, and
// counted in Stats.
func TestCallbackPanicExternalLoopKeepsBatch(t *testing.T) {
	noLeaks(t)
	p, ta := newOneWorkerExternal(t)
	hold := batchOfThree(t, p, ta, func(error) { panic("callback boom") })

	waitReadable(t, p.Fd())
	var pe *threadpool.PanicError
	func() {
		defer func() {
			v := recover()
			require.NotNil(t, v)
			var ok bool
			pe, ok = v.(*threadpool.PanicError)
			require.True(t, ok, "recovered %T", v)
		}()
		p.RunCompletions()
	}()
	require.Equal(t, "callback boom", pe.Value)
	require.NotEmpty(t, pe.Stack)

	requireRestOfBatch(t, p, ta, hold)
}

// With a panic handler, the default loop recovers a panicking Callback, hands
// the value over and goes on delivering.
func TestCallbackPanicWithHandler(t *testing.T) {
	noLeaks(t)
	const n = 100
	var mu sync.Mutex
	var got []any
	p := newPool(t, threadpool.WithPanicHandler(func(v any) {
		mu.Lock()
		got = append(got, v)
		mu.Unlock()
	}))
	ta := newTally(n)
	for i := range n {
		cb := ta.cb(i)
		if i%3 == 0 {
			cb = func(err error) { ta.cb(i)(err); panic(i) }
		}
		_, err := p.Submit(func() error { return nil }, cb)
		require.NoError(t, err)
	}
	ta.wait(n)
	require.NoError(t, p.Close())
	for i := range n {
		require.NoError(t, ta.requireOnce(t, i))
	}
	require.Len(t, got, (n+2)/3)
	require.ElementsMatch(t, func() []any {
		var want []any
		for i := 0; i < n; i += 3 {
			want = append(want, i)
		}
		return want
	}(), got)
	require.Equal(t, uint64(n), p.Stats().Delivered)
}
