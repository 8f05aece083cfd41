package threadpool

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// eventually waits for cond with a generous bound; it polls state that the
// pool changes asynchronously (worker counts), never a fixed delay.
func eventually(t *testing.T, cond func() bool, msg string, args ...any) {
	t.Helper()
	require.Eventually(t, cond, 30*time.Second, time.Millisecond, append([]any{msg}, args...)...)
}

func newPool(t *testing.T, opts ...Option) *Pool {
	t.Helper()
	p, err := New(opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

// gate blocks Funcs until opened and tells the test when they start.
type gate struct {
	open    chan struct{}
	started chan int
	once    sync.Once
}

func newGate(n int) *gate {
	return &gate{open: make(chan struct{}), started: make(chan int, n)}
}

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

// fn returns a Func that reports its start as id, waits for the gate and
// returns err.
func (g *gate) fn(id int, err error) Func {
	return func() error {
		g.started <- id
		<-g.open
		return err
	}
}

// requireRan requires that ch already holds the error a callback sent, one
// whose text is want: the callback must have run by now. msg says what it
// means if it has not.
func requireRan(t *testing.T, ch <-chan error, want, msg string) {
	t.Helper()
	select {
	case err := <-ch:
		require.EqualError(t, err, want)
	default:
		t.Fatal(msg)
	}
}

// waitReadable blocks in poll(2) until fd is readable.
func waitReadable(t *testing.T, fd int) {
	t.Helper()
	require.True(t, pollReadable(t, fd, -1))
}

// pollReadable reports whether fd is readable within timeout milliseconds
// (poll(2): -1 waits for ever, 0 not at all).
func pollReadable(t *testing.T, fd, timeout int) bool {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, timeout)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		require.NoError(t, err)
		return n == 1 && fds[0].Revents&unix.POLLIN != 0
	}
}

// awaitReadable blocks in poll(2) until fd is readable, for a goroutine
// other than the test's, which must not call require: it returns poll's
// error, or one saying what it saw instead of readability.
func awaitReadable(fd int) error {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if fds[0].Revents&unix.POLLIN == 0 {
			return fmt.Errorf("poll of fd %d: events %#x, not readable", fd, fds[0].Revents)
		}
		return nil
	}
}

// Test-only access to unexported knobs, for this package's external tests and
// benchmarks.

// WithEventfdLoop makes the default completion goroutine wait on an eventfd
// Notifier instead of a channel, to compare the two wake-ups.
func WithEventfdLoop() Option { return withLoopWake(wakeEventfd) }

// SetWriteFault makes every later signal write of n return f's error instead
// of writing (nil f restores real writes). Call it before n is shared.
func SetWriteFault(n *Notifier, f func() error) { n.writeFault = f }

// SignalPastClose writes one signal of n without the closed check of
// Notify: what a Notify that passed that check just before Close does.
func SignalPastClose(n *Notifier) { n.ev.signal() }

// SetReadFault makes every later read of n by Wait and Clear return f's error
// instead of reading (nil f restores real reads). It may be called while n is
// in use.
func SetReadFault(n *Notifier, f func() error) {
	if f == nil {
		n.readFault.Store(nil)
		return
	}
	n.readFault.Store(&f)
}

// LoopNotifier returns the Notifier the pool's loop waits on, or nil when the
// loop is woken through a channel.
func LoopNotifier(p *Pool) *Notifier { return p.notifier }

// RaceBuild reports a -race build.
const RaceBuild = raceBuild

// EventfdNotifier reports that a Notifier is an eventfd, not a pipe pair.
const EventfdNotifier = eventfdNotifier

func TestSubmitWithoutCallback(t *testing.T) {
	p := newPool(t)
	var ran atomic.Bool
	_, err := p.Submit(func() error { ran.Store(true); return errors.New("ignored") }, nil)
	require.NoError(t, err)
	require.NoError(t, p.Shutdown(context.Background()))
	require.True(t, ran.Load())
	s := p.Stats()
	require.Equal(t, uint64(1), s.Submitted)
	require.Equal(t, uint64(1), s.Completed)
	require.Equal(t, uint64(1), s.Delivered)
}

// Callbacks run on the loop, one at a time, never inside Submit: on the
// completion goroutine, or on the worker of a lone request, which delivers
// it as the loop (delivery.go).
func TestCallbackRunsOnTheLoopNeverInSubmit(t *testing.T) {
	p := newPool(t)
	const n = 50
	type call struct {
		id uint64
		on string
	}
	calls := make(chan call, n)
	var inCallback, overlaps atomic.Int32
	submitter := curGoroutineID()
	for range n {
		_, err := p.Submit(func() error { return nil }, func(error) {
			if inCallback.Add(1) != 1 {
				overlaps.Add(1)
			}
			calls <- call{curGoroutineID(), deliverer(p)}
			inCallback.Add(-1)
		})
		require.NoError(t, err)
	}
	require.NoError(t, p.Shutdown(context.Background()))
	close(calls)
	require.Len(t, calls, n)
	for c := range calls {
		require.NotEqual(t, submitter, c.id, "callback ran inside Submit")
		require.Contains(t, []string{"loop", "worker"}, c.on, "callback ran off the loop")
	}
	require.Zero(t, overlaps.Load(), "two callbacks ran at once")
}

func TestSubmitCoReturnsFuncResult(t *testing.T) {
	p := newPool(t)
	want := errors.New("boom")
	var value int
	require.ErrorIs(t, p.SubmitCo(context.Background(), func() error { value = 42; return want }), want)
	require.Equal(t, 42, value)
	require.NoError(t, p.SubmitCo(context.Background(), func() error { return nil }))
	// Their results went to the caller, not through the loop: Stats counts
	// them submitted and completed, never delivered.
	s := p.Stats()
	require.Equal(t, uint64(2), s.Submitted)
	require.Equal(t, uint64(2), s.Completed)
	require.Zero(t, s.Delivered)
}

func TestHundredRequestsWithMax64Workers(t *testing.T) {
	p := newPool(t, WithMaxWorkers(64))
	const n = 100
	results := make([]error, n)
	calls := make([]int, n)
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		want := fmt.Errorf("request %d", i)
		_, err := p.Submit(func() error { return want }, func(err error) {
			results[i] = err
			calls[i]++
			wg.Done()
		})
		require.NoError(t, err)
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		require.EqualError(t, results[i], fmt.Sprintf("request %d", i))
		require.Equal(t, 1, calls[i])
	}
	require.LessOrEqual(t, p.Stats().Workers, 64)
}

// TestCancelQueuedAndRunning fills the pool with long-running requests and
// cancels all of them. Which requests are running is known before the
// cancels (the workers report their start and block on a gate), so the
// outcome is deterministic: the running ones finish with their real result,
// every queued one is canceled and never starts, and every callback runs
// exactly once.
func TestCancelQueuedAndRunning(t *testing.T) {
	const workers, n = 4, 100
	p := newPool(t, WithMaxWorkers(workers))
	g := newGate(n)
	var ran [n]atomic.Bool
	results := make([]error, n)
	calls := make([]int, n)
	handles := make([]Handle, n)
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		inner := g.fn(i, fmt.Errorf("done %d", i))
		h, err := p.Submit(func() error { ran[i].Store(true); return inner() }, func(err error) {
			results[i] = err
			calls[i]++
			wg.Done()
		})
		require.NoError(t, err)
		handles[i] = h
	}
	active := map[int]bool{}
	for len(active) < workers {
		active[<-g.started] = true
	}
	for i := range handles {
		require.Equal(t, !active[i], p.Cancel(handles[i]), "request %d", i)
		require.False(t, p.Cancel(handles[i]), "second cancel of %d", i)
	}
	g.release()
	wg.Wait()
	for i := 0; i < n; i++ {
		require.Equal(t, 1, calls[i])
		if active[i] {
			require.True(t, ran[i].Load())
			require.EqualError(t, results[i], fmt.Sprintf("done %d", i))
		} else {
			require.False(t, ran[i].Load(), "canceled request %d ran", i)
			require.ErrorIs(t, results[i], ErrCanceled)
			require.ErrorIs(t, results[i], context.Canceled)
		}
	}
	s := p.Stats()
	require.Equal(t, uint64(n-workers), s.Canceled)
	require.Equal(t, uint64(workers), s.Completed)
}

// TestCancelRacingWorkers lets cancels race with workers dequeuing: whatever
// wins, a request either ran with its real result or was canceled and never
// ran, and its callback runs once.
// TestCancelDuringShutdownAndAfterClose: while a Shutdown lets the queued
// requests run, Cancel still cancels one; once Close has canceled what was
// queued, Cancel of such a request returns false.
func TestCancelDuringShutdownAndAfterClose(t *testing.T) {
	for _, graceful := range []bool{true, false} {
		p, err := New(WithMaxWorkers(1))
		require.NoError(t, err)
		g := newGate(1)
		_, err = p.Submit(g.fn(0, nil), nil)
		require.NoError(t, err)
		<-g.started
		got := make(chan error, 1)
		h, err := p.Submit(func() error { t.Error("canceled request ran"); return nil }, func(err error) { got <- err })
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() {
			if graceful {
				done <- p.Shutdown(context.Background())
			} else {
				done <- p.Close()
			}
		}()
		eventually(t, func() bool { return errors.Is(p.SetLimits(0, 1), ErrClosed) }, "closing began")
		require.Equal(t, graceful, p.Cancel(h), "graceful %v", graceful)
		g.release()
		require.NoError(t, <-done)
		require.ErrorIs(t, <-got, ErrCanceled)
		require.False(t, p.Cancel(h))
		require.NoError(t, p.Close())
	}
}

func TestCancelRacingWorkers(t *testing.T) {
	p := newPool(t, WithMaxWorkers(8))
	const n = 2000
	var ran [n]atomic.Bool
	var calls [n]atomic.Int32
	errs := make([]error, n)
	canceled := make([]bool, n)
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		h, err := p.Submit(func() error { ran[i].Store(true); return nil }, func(err error) {
			errs[i] = err
			calls[i].Add(1)
			wg.Done()
		})
		require.NoError(t, err)
		canceled[i] = p.Cancel(h)
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		require.Equal(t, int32(1), calls[i].Load())
		require.Equal(t, !canceled[i], ran[i].Load(), "request %d", i)
		if canceled[i] {
			require.ErrorIs(t, errs[i], ErrCanceled)
		} else {
			require.NoError(t, errs[i])
		}
	}
}

func TestCancelIgnoresZeroForeignAndStaleHandles(t *testing.T) {
	// An external loop makes recycling deterministic: RunCompletions returns
	// after the delivered elements are back on the free list.
	p := newPool(t, WithExternalLoop(), WithMaxWorkers(1))
	other := newPool(t)
	require.False(t, p.Cancel(Handle{}))

	g := newGate(1)
	_, err := p.Submit(g.fn(0, nil), nil) // occupies the only worker
	require.NoError(t, err)
	<-g.started

	var got []error
	record := func(err error) { got = append(got, err) }
	h1, err := p.Submit(func() error { return nil }, record)
	require.NoError(t, err)
	require.False(t, other.Cancel(h1), "handle of another pool")
	require.True(t, p.Cancel(h1))
	require.False(t, p.Cancel(h1), "already canceled")
	waitReadable(t, p.Fd())
	require.Equal(t, 1, p.RunCompletions())
	require.Len(t, got, 1)
	require.ErrorIs(t, got[0], ErrCanceled)

	h2, err := p.Submit(func() error { return nil }, record)
	require.NoError(t, err)
	require.Same(t, h1.e, h2.e, "the element was recycled")
	require.NotEqual(t, h1.gen, h2.gen)
	require.False(t, p.Cancel(h1), "a stale handle must not cancel the element's new request")
	require.True(t, p.Cancel(h2))
	g.release()
}

func TestBadInputGetsErrorAndNoCallback(t *testing.T) {
	p := newPool(t, WithMaxWorkers(1), WithMaxQueued(2))
	never := func(error) { t.Error("callback of a refused request ran") }

	_, err := p.Submit(nil, never)
	require.ErrorIs(t, err, ErrNilFunc)
	require.ErrorIs(t, p.SubmitCo(context.Background(), nil), ErrNilFunc)

	g := newGate(1)
	_, err = p.Submit(g.fn(0, nil), nil)
	require.NoError(t, err)
	<-g.started // running: does not count against the bound
	for i := 0; i < 2; i++ {
		_, err = p.Submit(func() error { return nil }, nil)
		require.NoError(t, err)
	}
	_, err = p.Submit(func() error { return nil }, never)
	require.ErrorIs(t, err, ErrQueueFull)
	require.ErrorIs(t, p.SubmitCo(context.Background(), func() error { return nil }), ErrQueueFull)
	g.release()
	require.NoError(t, p.Shutdown(context.Background()))

	_, err = p.Submit(func() error { return nil }, never)
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, p.SubmitCo(context.Background(), func() error { return nil }), ErrClosed)
	require.ErrorIs(t, p.SetLimits(1, 2), ErrClosed)
	s := p.Stats()
	require.Equal(t, uint64(3), s.Submitted)
	require.Equal(t, uint64(3), s.Delivered)
}

func TestInvalidLimits(t *testing.T) {
	for _, opts := range [][]Option{
		{WithMinWorkers(-1)},
		{WithMaxWorkers(0)},
		{WithMaxWorkers(-3)},
		{WithMinWorkers(5), WithMaxWorkers(4)},
		{WithIdleTimeout(0)},
		{WithMaxQueued(-1)},
	} {
		p, err := New(opts...)
		require.ErrorIs(t, err, ErrInvalidLimits)
		require.Nil(t, p)
	}
	p := newPool(t)
	require.ErrorIs(t, p.SetLimits(-1, 4), ErrInvalidLimits)
	require.ErrorIs(t, p.SetLimits(0, 0), ErrInvalidLimits)
	require.ErrorIs(t, p.SetLimits(3, 2), ErrInvalidLimits)
	s := p.Stats()
	require.Equal(t, DefaultMinWorkers, s.MinWorkers)
	require.Equal(t, DefaultMaxWorkers, s.MaxWorkers)
}

func TestMaxWorkersIsRespected(t *testing.T) {
	p := newPool(t, WithMaxWorkers(3))
	g := newGate(10)
	for i := 0; i < 10; i++ {
		_, err := p.Submit(g.fn(i, nil), nil)
		require.NoError(t, err)
	}
	for i := 0; i < 3; i++ {
		<-g.started
	}
	s := p.Stats()
	require.Equal(t, 3, s.Workers)
	require.Equal(t, 3, s.Running)
	require.Equal(t, 7, s.Queued)
	g.release()
	require.NoError(t, p.Shutdown(context.Background()))
	require.Equal(t, uint64(10), p.Stats().Completed)
}

func TestMinWorkersStartAndIdleWorkersExit(t *testing.T) {
	p := newPool(t, WithMinWorkers(2), WithMaxWorkers(8), WithIdleTimeout(5*time.Millisecond))
	require.Equal(t, 2, p.Stats().Workers)
	g := newGate(8)
	for i := 0; i < 8; i++ {
		_, err := p.Submit(g.fn(i, nil), nil)
		require.NoError(t, err)
	}
	for i := 0; i < 8; i++ {
		<-g.started
	}
	require.Equal(t, 8, p.Stats().Workers)
	g.release()
	eventually(t, func() bool { return p.Stats().Workers == 2 }, "idle workers above min must exit")
	eventually(t, func() bool { return p.Stats().IdleWorkers == 2 }, "min workers stay idle")
}

func TestSetLimitsStartsMinAndStopsSurplus(t *testing.T) {
	p := newPool(t, WithMaxWorkers(16))
	require.NoError(t, p.SetLimits(6, 16))
	require.Equal(t, 6, p.Stats().Workers, "SetLimits starts min workers at once")
	eventually(t, func() bool { return p.Stats().IdleWorkers == 6 }, "new workers go idle")

	require.NoError(t, p.SetLimits(0, 2))
	eventually(t, func() bool { return p.Stats().Workers == 2 }, "surplus idle workers exit promptly")

	// Busy workers above max exit when their request finishes.
	require.NoError(t, p.SetLimits(0, 4))
	g := newGate(4)
	t.Cleanup(g.release) // before the pool's Close, which waits for the Funcs
	for i := 0; i < 4; i++ {
		_, err := p.Submit(g.fn(i, nil), nil)
		require.NoError(t, err)
	}
	for i := 0; i < 4; i++ {
		<-g.started
	}
	require.Equal(t, 4, p.Stats().Workers)
	require.NoError(t, p.SetLimits(0, 1))
	g.release()
	// The last request's worker may deliver its callback itself, out of
	// the count toward max meanwhile: wait until every request was
	// delivered and that worker came back too.
	eventually(t, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.delivered.Load() == 4 && p.workers == 1 && p.lent == 0
	}, "busy surplus workers exit after their request")

	// Growing max gives queued work more workers.
	require.NoError(t, p.SetLimits(0, 1))
	g2 := newGate(3)
	t.Cleanup(g2.release)
	for i := 0; i < 3; i++ {
		_, err := p.Submit(g2.fn(i, nil), nil)
		require.NoError(t, err)
	}
	<-g2.started
	require.Equal(t, 1, p.Stats().Workers)
	require.NoError(t, p.SetLimits(0, 10))
	require.Equal(t, 3, p.Stats().Workers, "one new worker per queued request, not up to max")
	<-g2.started
	<-g2.started
	g2.release()
}

// TestSetLimitsStartsNoMoreWorkersThanMinAndQueueNeed raises min above the
// workers alive while requests are queued: the workers started for min take
// the queued requests, so no further worker may start for them. SetLimits
// used to start one more worker per queued request on top of those up to
// min, which then found nothing to do.
func TestSetLimitsStartsNoMoreWorkersThanMinAndQueueNeed(t *testing.T) {
	p := newPool(t, WithMaxWorkers(1))
	g := newGate(4)
	t.Cleanup(g.release) // before the pool's Close, which waits for the Funcs
	_, err := p.Submit(g.fn(0, nil), nil)
	require.NoError(t, err)
	<-g.started // the one worker runs it: the next three stay queued
	for i := 1; i <= 3; i++ {
		_, err := p.Submit(g.fn(i, nil), nil)
		require.NoError(t, err)
	}
	require.Equal(t, 3, p.Stats().Queued)
	require.NoError(t, p.SetLimits(4, 8))
	require.Equal(t, 4, p.Stats().Workers, "workers beyond min and the queued requests")
	for range 3 {
		<-g.started
	}
	g.release()
}

// TestStatsRunningCountsUntilWorkerComesBack holds the pool's lock while a
// Func returns: its callback runs, since delivery on the completion goroutine
// takes no lock, while the request still counts as running, as the doc of
// Stats says, until its worker takes the lock for its next request. A second
// request waits in the queue, so that the first is not the only one pending,
// which its worker would deliver itself (delivery.go).
func TestStatsRunningCountsUntilWorkerComesBack(t *testing.T) {
	p := newPool(t, WithMaxWorkers(1), WithSpin(0))
	g := newGate(1)
	t.Cleanup(g.release)
	delivered := make(chan struct{})
	_, err := p.Submit(g.fn(0, nil), func(error) { close(delivered) })
	require.NoError(t, err)
	<-g.started
	_, err = p.Submit(func() error { return nil }, nil)
	require.NoError(t, err)
	p.mu.Lock()
	g.release()
	<-delivered
	running := p.running
	p.mu.Unlock()
	require.Equal(t, 1, running, "a request whose callback ran, its worker not yet back")
	eventually(t, func() bool { return p.Stats().Running == 0 }, "the worker must come back")
}

func TestFuncPanicIsDeliveredAndPoolSurvives(t *testing.T) {
	p := newPool(t, WithMaxWorkers(1))
	got := make(chan error, 1)
	_, err := p.Submit(func() error { panic("kaboom") }, func(err error) { got <- err })
	require.NoError(t, err)
	err = <-got
	var pe *PanicError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "kaboom", pe.Value)
	require.Contains(t, string(pe.Stack), "pool_test.go")
	require.Contains(t, err.Error(), "kaboom")

	sentinel := errors.New("sentinel")
	_, err = p.Submit(func() error { panic(sentinel) }, func(err error) { got <- err })
	require.NoError(t, err)
	require.ErrorIs(t, <-got, sentinel, "PanicError unwraps an error value")

	require.NoError(t, p.SubmitCo(context.Background(), func() error { return nil }))
	s := p.Stats()
	require.Equal(t, uint64(2), s.Panicked)
	require.Equal(t, 1, s.Workers)
}

func TestFuncGoexitIsDeliveredAndWorkerReplaced(t *testing.T) {
	p := newPool(t, WithMaxWorkers(1))
	got := make(chan error, 1)
	_, err := p.Submit(func() error { runtime.Goexit(); return nil }, func(err error) { got <- err })
	require.NoError(t, err)
	err = <-got
	require.ErrorIs(t, err, ErrGoexit)
	var pe *PanicError
	require.ErrorAs(t, err, &pe)
	for i := 0; i < 3; i++ {
		require.NoError(t, p.SubmitCo(context.Background(), func() error { return nil }))
	}
	require.Equal(t, 1, p.Stats().Workers)
}

func TestCallbackPanicGoesToHandler(t *testing.T) {
	handled := make(chan any, 1)
	p := newPool(t, WithPanicHandler(func(v any) { handled <- v }))
	_, err := p.Submit(func() error { return nil }, func(error) { panic("in callback") })
	require.NoError(t, err)
	require.Equal(t, "in callback", <-handled)
	got := make(chan error, 1)
	_, err = p.Submit(func() error { return errors.New("after") }, func(err error) { got <- err })
	require.NoError(t, err)
	require.EqualError(t, <-got, "after")
}

func TestSubmitCoContextEndsWhileQueued(t *testing.T) {
	p := newPool(t, WithMaxWorkers(1))
	g := newGate(1)
	_, err := p.Submit(g.fn(0, nil), nil)
	require.NoError(t, err)
	<-g.started
	ctx, cancel := context.WithCancel(context.Background())
	var ran atomic.Bool
	res := make(chan error, 1)
	go func() { res <- p.SubmitCo(ctx, func() error { ran.Store(true); return nil }) }()
	eventually(t, func() bool { return p.Stats().Queued == 1 }, "SubmitCo request queued")
	cancel()
	// ctx's own error, not ErrCanceled (which is context.Canceled too).
	require.Equal(t, context.Canceled, <-res)
	g.release()
	require.NoError(t, p.Shutdown(context.Background()))
	require.False(t, ran.Load())
	require.Equal(t, uint64(1), p.Stats().Canceled)
}

// TestSubmitCoCanceledByShutdown: a queued SubmitCo request canceled by a
// Shutdown whose ctx ended makes SubmitCo return ErrCanceled (one whose own
// ctx ended returns that ctx's error: TestSubmitCoContextEndsWhileQueued).
func TestSubmitCoCanceledByShutdown(t *testing.T) {
	p := newPool(t, WithMaxWorkers(1))
	g := newGate(1)
	_, err := p.Submit(g.fn(0, nil), nil)
	require.NoError(t, err)
	<-g.started
	var ran atomic.Bool
	byShutdown := make(chan error, 1)
	go func() {
		byShutdown <- p.SubmitCo(context.Background(), func() error { ran.Store(true); return nil })
	}()
	eventually(t, func() bool { return p.Stats().Queued == 1 }, "SubmitCo request queued")
	expired, stop := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer stop()
	require.ErrorIs(t, p.Shutdown(expired), context.DeadlineExceeded)
	require.Equal(t, ErrCanceled, <-byShutdown, "canceled by Shutdown: ErrCanceled")
	g.release()
	require.NoError(t, p.Close())
	require.False(t, ran.Load())
	require.Equal(t, uint64(1), p.Stats().Canceled)
}

// abandonSubmitCo calls SubmitCo with a Func that waits for the returned
// gate and then returns err, ends the call's ctx once the Func runs, and
// requires that SubmitCo return ctx's error at once, the Func still running.
func abandonSubmitCo(t *testing.T, p *Pool, err error) *gate {
	t.Helper()
	g := newGate(1)
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- p.SubmitCo(ctx, g.fn(0, err)) }()
	<-g.started
	cancel()
	require.ErrorIs(t, <-res, context.Canceled, "SubmitCo returns at once while fn still runs")
	return g
}

func TestSubmitCoContextEndsWhileRunning(t *testing.T) {
	p := newPool(t)
	g := abandonSubmitCo(t, p, errors.New("late"))
	g.release()
	require.NoError(t, p.Shutdown(context.Background()))
	require.Equal(t, uint64(1), p.Stats().Completed, "fn finished in the background")
}

func TestSubmitCoAlreadyCanceledContext(t *testing.T) {
	p := newPool(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, p.SubmitCo(ctx, func() error { t.Error("ran"); return nil }), context.Canceled)
	require.Zero(t, p.Stats().Submitted)
}

func TestSubmitCoFromCallbackDoesNotDeadlock(t *testing.T) {
	for _, opts := range [][]Option{nil, {WithMaxWorkers(1)}} {
		p := newPool(t, opts...)
		got := make(chan error, 1)
		_, err := p.Submit(func() error { return nil }, func(error) {
			got <- p.SubmitCo(context.Background(), func() error { return errors.New("inner") })
		})
		require.NoError(t, err)
		require.EqualError(t, <-got, "inner")
	}
}

// SubmitCo called by a Func while no other worker can take the request runs
// it on the calling worker; with a free worker, it waits for that one.
func TestSubmitCoFromFunc(t *testing.T) {
	for _, max := range []int{1, 2, 3} {
		t.Run(fmt.Sprint("max", max), func(t *testing.T) {
			p := newPool(t, WithMaxWorkers(max))
			busy := newGate(1)
			if max > 1 {
				_, err := p.Submit(busy.fn(0, nil), nil) // one worker stays busy
				require.NoError(t, err)
				<-busy.started
			}
			errInner := errors.New("inner")
			got := make(chan error, 1)
			var outer, inner atomic.Uint64
			_, err := p.Submit(func() error {
				outer.Store(curGoroutineID())
				return p.SubmitCo(context.Background(), func() error {
					inner.Store(curGoroutineID())
					return errInner
				})
			}, func(err error) { got <- err })
			require.NoError(t, err)
			require.ErrorIs(t, <-got, errInner)
			if max < 3 {
				require.Equal(t, outer.Load(), inner.Load(), "no other worker: the calling worker ran fn")
			} else {
				require.NotEqual(t, outer.Load(), inner.Load(), "a third worker ran fn")
			}
			busy.release()
			require.NoError(t, p.Shutdown(context.Background()))
			s := p.Stats()
			require.Equal(t, s.Submitted, s.Completed)
			require.Zero(t, s.Running)
		})
	}
}

// A Func waiting in SubmitCo for the idle worker woken for its request, which
// then exits because it finds itself above a lowered maximum, runs the
// request itself. The test lowers the maximum under the lock without waking
// the idle worker, as if SetLimits had just done so and woken it for the
// request before that worker looked at the limits.
func TestSubmitCoFromFuncWhileMaxShrinks(t *testing.T) {
	p := newPool(t, WithMinWorkers(2), WithMaxWorkers(2))
	eventually(t, func() bool { return p.Stats().IdleWorkers == 2 }, "both workers idle")
	errInner := errors.New("inner")
	got := make(chan error, 1)
	inFunc, lowered := make(chan struct{}), make(chan struct{})
	var outer, inner atomic.Uint64
	_, err := p.Submit(func() error {
		outer.Store(curGoroutineID())
		close(inFunc)
		<-lowered
		return p.SubmitCo(context.Background(), func() error {
			inner.Store(curGoroutineID())
			return errInner
		})
	}, func(err error) { got <- err })
	require.NoError(t, err)
	<-inFunc
	p.mu.Lock()
	p.maxWorkers = 1
	p.mu.Unlock()
	close(lowered)
	require.ErrorIs(t, <-got, errInner)
	require.Equal(t, outer.Load(), inner.Load(), "the calling worker ran fn")
	// The worker delivering the outer callback (a lone request's) comes
	// back to the queue after it, and exits if it finds itself above max.
	eventually(t, func() bool { return p.Stats().Workers == 1 }, "one worker left, at max")
}

// TestCallbackMaySubmit chains requests, each submitted by the previous
// one's Callback: each runs, in order.
func TestCallbackMaySubmit(t *testing.T) {
	p := newPool(t, WithMaxWorkers(1))
	chain := make(chan int, 10)
	var step func(i int) Callback
	step = func(i int) Callback {
		return func(error) {
			chain <- i
			if i < 5 {
				_, err := p.Submit(func() error { return nil }, step(i+1))
				require.NoError(t, err)
			}
		}
	}
	_, err := p.Submit(func() error { return nil }, step(0))
	require.NoError(t, err)
	for i := 0; i <= 5; i++ {
		require.Equal(t, i, <-chain)
	}
}

func TestDeferCallFlushesOncePerDrain(t *testing.T) {
	p := newPool(t, WithExternalLoop())
	f := &countFlusher{}
	const n = 200
	for i := 0; i < n; i++ {
		_, err := p.Submit(func() error { return nil }, func(error) { p.DeferCall(f) })
		require.NoError(t, err)
	}
	delivered := 0
	for delivered < n {
		waitReadable(t, p.Fd())
		before := f.n
		got := p.RunCompletions()
		delivered += got
		if got > 0 {
			require.Equal(t, before+1, f.n, "one flush per drain, not per callback")
		} else {
			require.Equal(t, before, f.n)
		}
	}
	require.Equal(t, n, delivered)
	require.Less(t, f.n, n)
}

// DeferCall outside a batch, on the loop goroutine (with an external loop,
// whoever calls RunCompletions), flushes at once.
func TestDeferCallOutsideDrainFlushesAtOnce(t *testing.T) {
	p := newPool(t, WithExternalLoop())
	f := &countFlusher{}
	p.DeferCall(f)
	require.Equal(t, 1, f.n)
	p.DeferCall(nil)
}

// TestZeroAllocsPerRequest checks that a Submit-to-callback round trip with a
// reused Func and Callback allocates nothing once the pool is warm.
func TestZeroAllocsPerRequest(t *testing.T) {
	for name, opts := range map[string][]Option{
		"chan":    nil,
		"eventfd": {withLoopWake(wakeEventfd)},
	} {
		t.Run(name, func(t *testing.T) {
			p := newPool(t, opts...)
			done := make(chan struct{}, 1)
			fn := func() error { return nil }
			cb := func(error) { done <- struct{}{} }
			round := func() {
				if _, err := p.Submit(fn, cb); err != nil {
					panic(err)
				}
				<-done
			}
			for i := 0; i < 100; i++ {
				round()
			}
			require.Zero(t, testing.AllocsPerRun(1000, round))
			ctx := context.Background()
			require.Zero(t, testing.AllocsPerRun(1000, func() {
				if err := p.SubmitCo(ctx, fn); err != nil {
					panic(err)
				}
			}))
		})
	}
}

type countFlusher struct{ n int }

func (f *countFlusher) Flush() { f.n++ }

// TestMaxQueuedCountsOnlyWaitingRequests: requests that idle workers are
// about to take do not count against WithMaxQueued.
func TestMaxQueuedCountsOnlyWaitingRequests(t *testing.T) {
	p := newPool(t, WithMinWorkers(4), WithMaxWorkers(4), WithMaxQueued(1))
	eventually(t, func() bool { return p.Stats().IdleWorkers == 4 }, "min workers go idle")
	g := newGate(6)      // room for every request, should more be accepted
	t.Cleanup(g.release) // before the pool's Close, should the test fail
	for i := 0; i < 4; i++ {
		_, err := p.Submit(g.fn(i, nil), nil)
		require.NoError(t, err, "request %d has an idle worker", i)
	}
	_, err := p.Submit(g.fn(4, nil), nil)
	require.NoError(t, err, "one request may wait")
	_, err = p.Submit(g.fn(5, nil), nil)
	require.ErrorIs(t, err, ErrQueueFull)
	g.release()
}

// TestMaxQueuedCountsWorkersStartingForMin: the workers New starts for min
// take queued requests like idle ones before they have first looked at the
// queue, so a burst right after New is not refused. It was: the second
// request found no worker idle, none on its way and none that might still
// start. With one processor the workers cannot start before the Submits.
func TestMaxQueuedCountsWorkersStartingForMin(t *testing.T) {
	restore := oneProcessor(t)
	p := newPool(t, WithMinWorkers(4), WithMaxWorkers(4), WithMaxQueued(1))
	g := newGate(6) // room for every request, should more be accepted
	t.Cleanup(g.release)
	done := make(chan error, 6)
	errs := make([]error, 6)
	for i := range errs {
		_, errs[i] = p.Submit(g.fn(i, nil), func(err error) { done <- err })
	}
	restore()
	requireOneWaits(t, errs, 4, "has a worker starting", g, done)
}

// oneProcessor sets GOMAXPROCS to 1, so that the goroutines the test wakes
// cannot run before it blocks, and returns what sets it back, which also
// runs when the test ends, should it fail first.
func oneProcessor(t *testing.T) (restore func()) {
	procs := runtime.GOMAXPROCS(1)
	restore = sync.OnceFunc(func() { runtime.GOMAXPROCS(procs) })
	t.Cleanup(restore)
	return restore
}

// requireOneWaits checks the errors of a burst of Submits on a pool made
// WithMaxQueued(1), whose first n requests had a worker to take them: those
// and one more were accepted, the next one refused. It then lets the n
// requests that started end, and requires the n+1 callbacks, without error.
func requireOneWaits(t *testing.T, errs []error, n int, why string, g *gate, done <-chan error) {
	t.Helper()
	for i := range n {
		require.NoError(t, errs[i], "request %d %s", i, why)
	}
	require.NoError(t, errs[n], "one request may wait")
	require.ErrorIs(t, errs[n+1], ErrQueueFull)
	for range n {
		<-g.started
	}
	g.release()
	for range n + 1 {
		require.NoError(t, <-done)
	}
}

// TestMaxQueuedAfterLoweringMax: workers left above a lowered max, busy,
// do not make requests count as waiting when none waits.
func TestMaxQueuedAfterLoweringMax(t *testing.T) {
	p := newPool(t, WithMaxWorkers(2), WithMaxQueued(1), WithSpin(0))
	g := newGate(3)
	defer g.release()
	for i := range 2 {
		_, err := p.Submit(g.fn(i, nil), nil)
		require.NoError(t, err)
	}
	<-g.started
	<-g.started
	require.NoError(t, p.SetLimits(0, 1))
	require.Zero(t, p.Stats().Queued)
	_, err := p.Submit(g.fn(2, nil), nil)
	require.NoError(t, err, "nothing waits; the bound is 1")
	_, err = p.Submit(g.fn(3, nil), nil)
	require.ErrorIs(t, err, ErrQueueFull, "one waits now")
}

// TestMaxQueuedAfterLoweringMaxWithIdleWorkers: lowering max below the
// number of idle workers leaves the idle ones that stay counted, so requests
// they will take do not count against WithMaxQueued. SetLimits used to wake
// every idle worker to re-check the limits, which took them all off the
// idle list before any of them ran: the second request after it was
// refused with ErrQueueFull, though three workers were about to be free.
// With one processor the woken workers cannot run before the Submits.
func TestMaxQueuedAfterLoweringMaxWithIdleWorkers(t *testing.T) {
	p := newPool(t, WithMinWorkers(4), WithMaxWorkers(4), WithMaxQueued(1), WithSpin(0))
	eventually(t, func() bool { return p.Stats().IdleWorkers == 4 }, "min workers go idle")
	g := newGate(5) // room for every request, should more be accepted
	defer g.release()
	done := make(chan error, 5)
	cb := func(err error) { done <- err }
	restore := oneProcessor(t)
	require.NoError(t, p.SetLimits(0, 3))
	errs := make([]error, 5)
	for i := range errs {
		_, errs[i] = p.Submit(g.fn(i, nil), cb)
	}
	restore()
	requireOneWaits(t, errs, 3, "has an idle worker that stays", g, done)
	eventually(t, func() bool { return p.Stats().Workers == 3 }, "the worker above max exits")
}

// TestSetLimitsAgainWakesNoMoreIdleWorkersToExit: a second SetLimits to the
// same max, before the idle workers the first woke to exit have left, wakes
// no more of them: those it woke are already uncounted. With one
// processor the woken workers cannot run before the test looks.
func TestSetLimitsAgainWakesNoMoreIdleWorkersToExit(t *testing.T) {
	p := newPool(t, WithMinWorkers(5), WithMaxWorkers(5), WithSpin(0))
	eventually(t, func() bool { return p.Stats().IdleWorkers == 5 }, "min workers go idle")
	restore := oneProcessor(t)
	require.NoError(t, p.SetLimits(0, 3))
	first := p.Stats().IdleWorkers
	require.NoError(t, p.SetLimits(0, 3))
	second := p.Stats().IdleWorkers
	restore()
	require.Equal(t, 3, first, "two woken to exit")
	require.Equal(t, 3, second, "none more")
	eventually(t, func() bool { s := p.Stats(); return s.Workers == 3 && s.IdleWorkers == 3 }, "two exit, three stay idle")
}

// TestMaxQueuedDoesNotCountWorkersLeavingAboveMax: workers woken for
// queued requests, which a lowered max then makes exit when they arrive, do
// not count as taking those requests, nor, once the requests are canceled,
// the ones submitted next. They used to: four workers on their way let a
// fifth request in, and five then waited for the one busy worker, over a
// WithMaxQueued of 1. With one processor the woken workers cannot run
// before the calls.
func TestMaxQueuedDoesNotCountWorkersLeavingAboveMax(t *testing.T) {
	for _, cancel := range []bool{false, true} {
		t.Run(fmt.Sprintf("cancel=%v", cancel), func(t *testing.T) {
			p := newPool(t, WithMinWorkers(5), WithMaxWorkers(5), WithMaxQueued(1), WithSpin(0))
			eventually(t, func() bool { return p.Stats().IdleWorkers == 5 }, "min workers go idle")
			// Room for every request, should the test fail with more
			// accepted than it wants.
			g := newGate(9)
			t.Cleanup(g.release) // before the pool's Close, should the test fail
			done := make(chan error, 9)
			cb := func(err error) { done <- err }
			var errs []error
			submit := func(i int) Handle {
				h, err := p.Submit(g.fn(i, nil), cb)
				errs = append(errs, err)
				return h
			}
			restore := oneProcessor(t)
			submit(0) // straight to an idle worker, which it holds
			var hs []Handle
			for i := 1; i <= 4; i++ { // queued: each wakes one of the others
				hs = append(hs, submit(i))
			}
			canceled := 0
			if cancel {
				for _, h := range hs {
					if p.Cancel(h) {
						canceled++
					}
				}
			}
			limitsErr := p.SetLimits(0, 1) // the four woken workers will exit
			var batchErr error
			if cancel {
				b := p.NewBatch()
				for i := 5; i <= 6; i++ {
					require.NoError(t, b.Add(g.fn(i, nil), cb))
				}
				batchErr = b.Flush()
				submit(5)
			}
			submit(6)
			restore()

			require.NoError(t, limitsErr)
			for i, err := range errs[:5] {
				require.NoError(t, err, "request %d", i)
			}
			accepted := 5
			if cancel {
				require.Equal(t, 4, canceled, "the queued requests had not started")
				require.ErrorIs(t, batchErr, ErrQueueFull, "both would wait for the busy worker")
				require.NoError(t, errs[5], "one may wait")
				require.ErrorIs(t, errs[6], ErrQueueFull, "one waits")
				accepted = 6
			} else {
				require.ErrorIs(t, errs[5], ErrQueueFull, "four wait for the busy worker")
			}
			require.Equal(t, 0, <-g.started)
			g.release()
			var ok, canceledErrs int
			for range accepted {
				if err := <-done; err == nil {
					ok++
				} else {
					require.ErrorIs(t, err, ErrCanceled)
					canceledErrs++
				}
			}
			require.Equal(t, canceled, canceledErrs)
			require.Equal(t, accepted-canceled, ok)
			eventually(t, func() bool { return p.Stats().Workers == 1 }, "the workers above max exit")
		})
	}
}

// TestGoexitWorkerReplacedUpToMin: a worker lost to runtime.Goexit is
// replaced even when nothing is queued, so that min workers stay alive.
func TestGoexitWorkerReplacedUpToMin(t *testing.T) {
	p := newPool(t, WithMinWorkers(2), WithMaxWorkers(2))
	got := make(chan error, 1)
	_, err := p.Submit(func() error { runtime.Goexit(); return nil }, func(err error) { got <- err })
	require.NoError(t, err)
	require.ErrorIs(t, <-got, ErrGoexit)
	eventually(t, func() bool { s := p.Stats(); return s.Workers == 2 && s.IdleWorkers == 2 }, "min workers after a Goexit")
}

func TestBatchSubmitsEveryRequestOnce(t *testing.T) {
	p := newPool(t)
	b := p.NewBatch()
	var mu sync.Mutex
	seen := make(map[int]int)
	done := make(chan struct{}, 100)
	for round := 0; round < 3; round++ {
		for i := 0; i < 100; i++ {
			id := round*100 + i
			require.NoError(t, b.Add(func() error { return nil }, func(err error) {
				require.NoError(t, err)
				mu.Lock()
				seen[id]++
				mu.Unlock()
				done <- struct{}{}
			}))
		}
		require.Equal(t, 100, b.Len(), "Add only records")
		require.Equal(t, uint64(round*100), p.Stats().Submitted, "nothing is submitted before Flush")
		require.NoError(t, b.Flush())
		require.Zero(t, b.Len())
		for i := 0; i < 100; i++ {
			<-done
		}
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seen, 300)
	for id, n := range seen {
		require.Equal(t, 1, n, "request %d", id)
	}
	require.NoError(t, b.Flush(), "an empty batch flushes nothing")
}

func TestBatchBadInput(t *testing.T) {
	p := newPool(t, WithMaxWorkers(1), WithMaxQueued(2))
	b := p.NewBatch()
	require.ErrorIs(t, b.Add(nil, nil), ErrNilFunc)
	require.Zero(t, b.Len())

	// One worker busy; two may wait: three more do not fit, and none is taken.
	g := newGate(1)
	t.Cleanup(g.release) // should an assertion fail, before the pool's Close
	_, err := p.Submit(g.fn(0, nil), nil)
	require.NoError(t, err)
	<-g.started
	cb := func(error) { t.Error("callback of a refused batch") }
	for i := 0; i < 3; i++ {
		require.NoError(t, b.Add(func() error { return nil }, cb))
	}
	err = b.Flush()
	require.Equal(t, ErrQueueFull, err, "a busy pool: the plain error, to retry on")
	require.Zero(t, b.Len(), "a refused batch is emptied")
	require.Zero(t, p.Stats().Queued)

	// Four never fit in one worker and two queued: the error says so.
	for i := 0; i < 4; i++ {
		require.NoError(t, b.Add(func() error { return nil }, cb))
	}
	err = b.Flush()
	require.ErrorIs(t, err, ErrQueueFull)
	require.EqualError(t, err, "threadpool: queue is full: a batch of 4 requests never fits in 1 workers and 2 queued (WithMaxQueued): split it or raise the limits")
	require.Zero(t, b.Len())

	ran := make(chan struct{}, 2)
	for i := 0; i < 2; i++ {
		require.NoError(t, b.Add(func() error { return nil }, func(error) { ran <- struct{}{} }))
	}
	require.NoError(t, b.Flush(), "two fit")
	g.release()
	<-ran
	<-ran

	require.NoError(t, p.Close())
	require.NoError(t, b.Add(func() error { return nil }, cb))
	require.ErrorIs(t, b.Flush(), ErrClosed)
	require.Zero(t, b.Len())
}

func TestBatchFlushAllocatesNothing(t *testing.T) {
	p := newPool(t)
	b := p.NewBatch()
	done := make(chan struct{}, 8)
	fn := func() error { return nil }
	cb := func(error) { done <- struct{}{} }
	round := func() {
		for i := 0; i < 8; i++ {
			if err := b.Add(fn, cb); err != nil {
				panic(err)
			}
		}
		if err := b.Flush(); err != nil {
			panic(err)
		}
		for i := 0; i < 8; i++ {
			<-done
		}
	}
	for i := 0; i < 100; i++ {
		round()
	}
	require.Zero(t, testing.AllocsPerRun(200, round))
}

// TestBurstWakesEveryWorkerItNeeds submits more blocking requests at once
// than workers may be woken at a time: each woken worker must wake the next
// while requests wait, until every request runs at once.
func TestBurstWakesEveryWorkerItNeeds(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			const n = 40
			p := newPool(t, WithMaxWorkers(n))
			// Warm up n idle workers, so that the burst wakes idle ones.
			g0 := newGate(n)
			for i := 0; i < n; i++ {
				_, err := p.Submit(g0.fn(i, nil), nil)
				require.NoError(t, err)
			}
			for i := 0; i < n; i++ {
				<-g0.started
			}
			g0.release()
			eventually(t, func() bool { return p.Stats().IdleWorkers == n }, "workers go idle")

			g := newGate(n)
			b := p.NewBatch()
			for i := 0; i < n; i++ {
				if batch {
					require.NoError(t, b.Add(g.fn(i, nil), nil))
				} else {
					_, err := p.Submit(g.fn(i, nil), nil)
					require.NoError(t, err)
				}
			}
			require.NoError(t, b.Flush())
			for i := 0; i < n; i++ {
				<-g.started // all n run at once: none waits behind a blocked one
			}
			s := p.Stats()
			require.Equal(t, n, s.Running)
			require.Equal(t, n, s.Workers)
			g.release()
		})
	}
}

func TestExternalLoopNestedRunCompletions(t *testing.T) {
	p := newPool(t, WithExternalLoop(), WithMaxWorkers(1))
	g := newGate(3)
	order := []int{}
	for i := 0; i < 3; i++ {
		_, err := p.Submit(g.fn(i, nil), func(error) {
			order = append(order, i)
			if i == 0 {
				// A nested loop iteration delivers the rest of the batch.
				p.RunCompletions()
			}
		})
		require.NoError(t, err)
	}
	g.release()
	require.NoError(t, p.Shutdown(context.Background()))
	require.Equal(t, []int{0, 1, 2}, order)
}

// TestSubmitCoAbandonedResultIsNotHandedToTheNextCaller: a SubmitCo whose
// ctx ended while fn ran leaves fn's result to nobody. The element goes back
// to the pool once the worker is done with it, and the next SubmitCo, which
// gets that very element, must get its own fn's result, not the one left
// behind.
func TestSubmitCoAbandonedResultIsNotHandedToTheNextCaller(t *testing.T) {
	p := newPool(t, WithMaxWorkers(1))
	g := abandonSubmitCo(t, p, errors.New("abandoned"))
	g.release()
	// The worker publishes the result nobody takes, then recycles the
	// element, the only one this pool has made.
	eventually(t, func() bool { return p.recycled.Load() != nil }, "the element is recycled")

	require.NoError(t, p.SubmitCo(context.Background(), func() error { return nil }),
		"the next SubmitCo got the result the last caller abandoned")
	require.Equal(t, uint64(2), p.Stats().Completed)
}

// TestBatchRequestOnARecycledSubmitCoElementGetsItsCallback: an element that
// served a SubmitCo request goes back to the pool, and the next request to
// get it, here one of a Batch, is an ordinary one: its result goes to its
// callback, on the loop, not to the channel of the SubmitCo that is gone.
func TestBatchRequestOnARecycledSubmitCoElementGetsItsCallback(t *testing.T) {
	p := newPool(t, WithMaxWorkers(1))
	require.NoError(t, p.SubmitCo(context.Background(), func() error { return nil }))
	// The caller and the worker both let go of the element, the only one
	// this pool has made, and the last of them recycles it.
	eventually(t, func() bool { return p.recycled.Load() != nil }, "the element is recycled")

	got := make(chan error, 1)
	b := p.NewBatch()
	require.NoError(t, b.Add(func() error { return errors.New("batched") }, func(err error) { got <- err }))
	require.NoError(t, b.Flush())
	require.NoError(t, p.Shutdown(context.Background()))
	requireRan(t, got, "batched", "the batched request's callback never ran")
	require.Equal(t, uint64(1), p.Stats().Delivered)
}
