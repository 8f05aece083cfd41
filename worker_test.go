package threadpool

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestIdleTimeoutAfterLongWork runs Funcs that outlast the idle timeout, so
// that the reaper passes while the workers are busy: they must still exit
// once idle, and only then.
func TestIdleTimeoutAfterLongWork(t *testing.T) {
	const timeout = time.Millisecond
	p := newPool(t, WithMaxWorkers(2), WithIdleTimeout(timeout))
	done := make(chan error, 2)
	for range 2 {
		_, err := p.Submit(func() error {
			<-time.After(5 * timeout) // work longer than the idle timeout
			return nil
		}, func(err error) { done <- err })
		require.NoError(t, err)
	}
	require.NoError(t, <-done)
	require.NoError(t, <-done)
	eventually(t, func() bool { return p.Stats().Workers == 0 }, "idle workers above min must exit")
}

// TestWorkersAtMinOutliveTheirTimers keeps the minimum of workers through
// many idle timeouts, and they still take work.
func TestWorkersAtMinOutliveTheirTimers(t *testing.T) {
	p := newPool(t, WithMinWorkers(1), WithMaxWorkers(1), WithIdleTimeout(time.Microsecond))
	for range 50 {
		require.NoError(t, p.SubmitCo(t.Context(), func() error { return nil }))
		require.Equal(t, 1, p.Stats().Workers)
	}
}

// TestPollTimeout: the reaper's poll(2) timeout rounds up to whole
// milliseconds, never spins on a tiny idle timeout and never overflows on a
// huge one.
func TestPollTimeout(t *testing.T) {
	for d, want := range map[time.Duration]int{
		time.Nanosecond:              1,
		time.Millisecond:             1,
		1500 * time.Microsecond:      2,
		DefaultIdleTimeout:           10000,
		time.Duration(math.MaxInt64): math.MaxInt32,
	} {
		require.Equal(t, want, pollTimeout(d), "idle timeout %v", d)
	}
}
