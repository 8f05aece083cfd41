package threadpool

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

type recFlusher struct {
	name string
	log  *[]string
	hook func()
}

func (f *recFlusher) Flush() {
	*f.log = append(*f.log, f.name)
	if f.hook != nil {
		f.hook()
	}
}

func TestDeferrerDedupAndOrder(t *testing.T) {
	var d Deferrer
	var log []string
	a, b, c := &recFlusher{"a", &log, nil}, &recFlusher{"b", &log, nil}, &recFlusher{"c", &log, nil}
	d.Begin()
	for i := 0; i < 10; i++ {
		d.Call(b)
		d.Call(a)
		d.Call(b)
	}
	d.Call(c)
	require.Empty(t, log, "nothing runs inside the region")
	d.End()
	require.Equal(t, []string{"b", "a", "c"}, log, "once each, in order of first Call")
	d.Begin()
	d.End()
	require.Equal(t, []string{"b", "a", "c"}, log, "the list was emptied")
}

func TestDeferrerOutsideRegionRunsAtOnce(t *testing.T) {
	var d Deferrer
	var log []string
	a := &recFlusher{"a", &log, nil}
	d.Call(a)
	d.Call(a)
	require.Equal(t, []string{"a", "a"}, log)
	d.Call(nil)
	require.Zero(t, d.Depth())
}

func TestDeferrerNesting(t *testing.T) {
	var d Deferrer
	var log []string
	a, b := &recFlusher{"a", &log, nil}, &recFlusher{"b", &log, nil}
	d.Begin()
	d.Call(a)
	d.Begin()
	d.Call(b)
	d.Call(a)
	d.End()
	require.Empty(t, log, "inner End does not flush")
	require.Equal(t, 1, d.Depth())
	d.End()
	require.Equal(t, []string{"a", "b"}, log)
}

func TestDeferrerReentrantFlush(t *testing.T) {
	var d Deferrer
	var log []string
	inner := &recFlusher{"inner", &log, nil}
	later := &recFlusher{"later", &log, nil}
	outer := &recFlusher{"outer", &log, nil}
	// A Flush that opens its own region and defers into it, itself included:
	// that would recurse forever if the list were not taken out before it
	// runs, so the hook stops after the second round.
	rounds := 0
	outer.hook = func() {
		rounds++
		if rounds > 1 {
			return
		}
		d.Begin()
		d.Call(inner)
		d.Call(inner)
		d.Call(outer)
		d.End()
	}
	d.Begin()
	d.Call(outer)
	d.Call(later)
	d.End()
	require.Equal(t, []string{"outer", "inner", "outer", "later"}, log)
	require.Zero(t, d.Depth())
}

func TestDeferrerFlushCallingCallOutsideRegion(t *testing.T) {
	var d Deferrer
	var log []string
	b := &recFlusher{"b", &log, nil}
	a := &recFlusher{"a", &log, func() { d.Call(b) }}
	d.Begin()
	d.Call(a)
	d.End()
	require.Equal(t, []string{"a", "b"}, log, "a Call from a Flush after the region runs at once")
}

func TestDeferrerPanickingFlushKeepsTheRest(t *testing.T) {
	var d Deferrer
	var log []string
	a := &recFlusher{"a", &log, nil}
	bad := &recFlusher{"bad", &log, func() { panic("flush failed") }}
	c := &recFlusher{"c", &log, nil}
	d.Begin()
	d.Call(a)
	d.Call(bad)
	d.Call(c)
	require.PanicsWithValue(t, "flush failed", d.End)
	require.Equal(t, []string{"a", "bad"}, log)
	d.Begin()
	d.End()
	require.Equal(t, []string{"a", "bad", "c"}, log, "the call after the panic is not lost")

	var handled []any
	d.onPanic = func(v any) { handled = append(handled, v) }
	d.Begin()
	d.Call(bad)
	d.Call(a)
	d.End()
	require.Equal(t, []any{"flush failed"}, handled)
	require.Equal(t, []string{"a", "bad", "c", "bad", "a"}, log)
}

// A Flush that panics at the outermost End leaves the calls after it
// recorded and says so (onLeft: the pool wakes its loop for them); one that
// panics in a flush inside a region (a Close from a Callback flushing the
// batch early) does not, since the enclosing End runs them anyway.
func TestDeferrerOnLeftOnlyAtTheOutermostEnd(t *testing.T) {
	var log []string
	bad := &recFlusher{"bad", &log, func() { panic("flush failed") }}
	good := &recFlusher{"good", &log, nil}
	left := 0
	d := &Deferrer{onLeft: func() { left++ }}

	d.Begin()
	d.Call(bad)
	d.Call(good)
	require.Panics(t, d.flush, "a flush inside the region")
	require.Zero(t, left, "inside a region")
	d.End()
	require.Equal(t, []string{"bad", "good"}, log, "the enclosing End ran the rest")
	require.Zero(t, left)

	log = nil
	d.Begin()
	d.Call(bad)
	d.Call(good)
	require.Panics(t, d.End)
	require.Equal(t, 1, left, "at the outermost End")
	require.Equal(t, []string{"bad"}, log)
	d.Begin()
	d.End()
	require.Equal(t, []string{"bad", "good"}, log, "the next outermost End ran the rest")
}

func TestDeferrerEndWithoutBeginPanics(t *testing.T) {
	var d Deferrer
	require.Panics(t, d.End)
}

type funcFlusher func()

func (f funcFlusher) Flush() { f() }

func TestDeferrerUncomparableFlusherIsNotDeduplicated(t *testing.T) {
	var d Deferrer
	n := 0
	f := funcFlusher(func() { n++ })
	d.Begin()
	d.Call(f)
	d.Call(f)
	d.End()
	require.Equal(t, 2, n)
}

// boxed is a Flusher whose static type is comparable but whose value may not
// be: h can hold a func, or a struct holding one.
type boxed struct {
	h any
	n *int
}

func (b boxed) Flush() { *b.n++ }

// Flushers are compared by value: one whose value cannot be compared never
// makes Call panic and is flushed once per Call; equal comparable values are
// flushed once. Both below and above the length at which Call switches from
// scanning the list to a map.
func TestDeferrerComparesValuesNotTypes(t *testing.T) {
	for _, others := range []int{0, 2 * scanMax} {
		var d Deferrer
		var n, m, other int
		withFunc := boxed{h: struct{ fn func() }{func() {}}, n: &n}
		withInt := boxed{h: 1, n: &m}
		d.Begin()
		for i := 0; i < others; i++ {
			d.Call(boxed{h: i + 2, n: &other})
		}
		require.NotPanics(t, func() {
			d.Call(withFunc)
			d.Call(withInt)
			d.Call(withFunc)
			d.Call(boxed{h: 1, n: &m})
		})
		d.End()
		require.Equal(t, 2, n, "an uncomparable value is flushed once per Call")
		require.Equal(t, 1, m, "equal values are flushed once")
		require.Equal(t, others, other)
	}
}

// The same through a pool, on its completion loop: a panic there would end
// the program.
func TestDeferCallUncomparableValue(t *testing.T) {
	p := newPool(t, WithExternalLoop())
	n := 0
	f := boxed{h: func() {}, n: &n}
	for i := 0; i < 2; i++ {
		_, err := p.Submit(func() error { return nil }, func(error) {
			p.DeferCall(f)
			p.DeferCall(f)
		})
		require.NoError(t, err)
	}
	require.NoError(t, p.Shutdown(context.Background()))
	require.Equal(t, 4, n)
}

type nanFlusher float64

func (nanFlusher) Flush() {}

// Thousands of distinct Flushers in one region are each flushed once, in
// order of first Call, and the map that finds the duplicates is emptied for
// the next region, keys unequal to themselves (NaN) included.
func TestDeferrerManyDistinctFlushers(t *testing.T) {
	var d Deferrer
	var log []string
	fs := make([]*recFlusher, 5000)
	for i := range fs {
		fs[i] = &recFlusher{name: fmt.Sprint(i), log: &log}
	}
	var want []string
	d.Begin()
	for i, f := range fs {
		d.Call(f)
		d.Call(fs[i/2]) // already recorded
		want = append(want, f.name)
	}
	d.Call(nanFlusher(math.NaN()))
	d.End()
	require.Equal(t, want, log)
	require.Empty(t, d.seen)

	log = nil
	d.Begin()
	d.Call(fs[7])
	d.Call(fs[3])
	d.Call(fs[7])
	d.End()
	require.Equal(t, []string{"7", "3"}, log)
}

// Once a Deferrer has recorded a batch of a given size, recording another
// allocates nothing.
func TestDeferrerSteadyStateAllocatesNothing(t *testing.T) {
	var d Deferrer
	fs := make([]*countFlusher, 1000)
	for i := range fs {
		fs[i] = &countFlusher{}
	}
	batch := func() {
		d.Begin()
		for _, f := range fs {
			d.Call(f)
			d.Call(f)
		}
		d.End()
	}
	batch()
	require.Zero(t, testing.AllocsPerRun(100, batch))
	require.Equal(t, 102, fs[0].n, "AllocsPerRun runs batch once more to warm up")
}

// The region after the first one of a given size allocates nothing already:
// the list that the first region recorded is kept for it.
func TestDeferrerSecondRegionAllocatesNothing(t *testing.T) {
	for _, n := range []int{scanMax, 1000} {
		var d Deferrer
		fs := make([]*countFlusher, n)
		for i := range fs {
			fs[i] = &countFlusher{}
		}
		region := func() {
			d.Begin()
			for _, f := range fs {
				d.Call(f)
			}
			d.End()
		}
		region()
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // as testing.AllocsPerRun
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		region()
		runtime.ReadMemStats(&after)
		require.Zero(t, after.Mallocs-before.Mallocs, "%d Flushers", n)
		require.Equal(t, 2, fs[n-1].n)
	}
}

// BenchmarkDeferrerDistinct records n distinct Flushers, each twice, in one
// region and flushes them: the time per Call stays flat as n grows.
func BenchmarkDeferrerDistinct(b *testing.B) {
	for _, n := range []int{4, 64, 1024, 16384} {
		b.Run(fmt.Sprint("n=", n), func(b *testing.B) {
			var d Deferrer
			fs := make([]*countFlusher, n)
			for i := range fs {
				fs[i] = &countFlusher{}
			}
			b.ReportAllocs()
			for b.Loop() {
				d.Begin()
				for _, f := range fs {
					d.Call(f)
				}
				for _, f := range fs {
					d.Call(f)
				}
				d.End()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(2*n), "ns/call")
		})
	}
}

// closer is a Flusher that closes its channel.
type closer chan struct{}

func (c closer) Flush() { close(c) }

// holdDelivery submits a request to the external-loop pool p whose callback
// calls first and then holds the loop, delivered by another goroutine, and
// returns once the callback holds it. release lets the callback return and
// returns what that RunCompletions returned.
func holdDelivery(t *testing.T, p *Pool, first func()) (release func() int) {
	inCallback, hold := make(chan struct{}), make(chan struct{})
	_, err := p.Submit(func() error { return nil }, func(error) {
		first()
		close(inCallback)
		<-hold
	})
	require.NoError(t, err)
	delivered := make(chan int, 1)
	failed := make(chan error, 1)
	go func() {
		if err := awaitReadable(p.Fd()); err != nil {
			failed <- err
			return
		}
		delivered <- p.RunCompletions()
	}()
	select {
	case <-inCallback:
	case err := <-failed:
		require.NoError(t, err)
	}
	return func() int {
		close(hold)
		return <-delivered
	}
}

// In race builds, DeferCall off the completion loop panics with a message
// that names the rule: from another goroutine, from a Func, and while another
// goroutine delivers completions.
func TestDeferCallOffTheLoopPanicsInRaceBuilds(t *testing.T) {
	if !raceBuild {
		t.Skip("checked in race builds only")
	}
	f := &countFlusher{}
	own := newPool(t)
	var v any
	require.Panics(t, func() {
		defer func() { v = recover(); panic(v) }()
		own.DeferCall(f)
	}, "another goroutine, pool with its own loop")
	// The message says "while goroutine N delivers" if the loop happens to
	// drain at that moment.
	require.Contains(t, v, fmt.Sprintf("%s (called on goroutine %d", msgDeferCall, curGoroutineID()))

	// Inside a callback, on the loop, it is allowed.
	flushed := make(chan struct{})
	_, err := own.Submit(func() error { return nil }, func(error) { own.DeferCall(closer(flushed)) })
	require.NoError(t, err)
	<-flushed

	ext := newPool(t, WithExternalLoop())
	err = ext.SubmitCo(context.Background(), func() error { ext.DeferCall(f); return nil })
	var pe *PanicError
	require.ErrorAs(t, err, &pe, "from a Func")
	require.Contains(t, pe.Value, msgDeferCall)

	// While the loop goroutine delivers, from the test goroutine.
	release := holdDelivery(t, ext, func() { ext.DeferCall(f) })
	require.PanicsWithValue(t, fmt.Sprintf("%s (called on goroutine %d while goroutine %d delivers)",
		msgDeferCall, curGoroutineID(), ext.drainOwner.Load()), func() { ext.DeferCall(f) })
	require.Equal(t, 1, release())
	require.Equal(t, 1, f.n, "the callback's DeferCall ran, the refused ones did not")
}

// In race builds, delivering completions of an external loop from a Func, or
// from two goroutines at once, panics with a message that names the rule.
func TestRunCompletionsOffTheLoopPanicsInRaceBuilds(t *testing.T) {
	if !raceBuild {
		t.Skip("checked in race builds only")
	}
	p := newPool(t, WithExternalLoop())
	err := p.SubmitCo(context.Background(), func() error { p.RunCompletions(); return nil })
	var pe *PanicError
	require.ErrorAs(t, err, &pe, "from a Func")
	require.Contains(t, pe.Value, msgDeliver)

	release := holdDelivery(t, p, func() {})
	require.PanicsWithValue(t, fmt.Sprintf("%s (called on goroutine %d while goroutine %d delivers)",
		msgDeliver, curGoroutineID(), p.drainOwner.Load()), func() { p.RunCompletions() })
	require.Panics(t, func() { p.Close() }, "Close delivers too")
	require.Equal(t, 1, release())
	require.NotPanics(t, func() { p.RunCompletions() }, "the loop is free again")
}

// requireFlushFailed runs RunCompletions on p, which must panic with one
// *PanicError of the value and stack of a recFlusher's panic "flush failed".
func requireFlushFailed(t *testing.T, p *Pool) {
	t.Helper()
	var v any
	func() {
		defer func() { v = recover() }()
		p.RunCompletions()
	}()
	pe, ok := v.(*PanicError)
	require.True(t, ok, "RunCompletions panicked with %#v, not a *PanicError", v)
	require.Equal(t, "flush failed", pe.Value)
	require.Contains(t, string(pe.Stack), "recFlusher", "the stack of the panicking Flush")
}

// A Flusher that panics at the end of a batch of a pool without a panic
// handler is re-raised as a *PanicError, as WithPanicHandler says, and the
// Flushes deferred after it run at the end of the next batch, for which the
// loop is woken at once (Fd readable: they used to wait for the next
// completion, a reply's flush with them); with a handler the handler gets
// the value and the rest run at once.
func TestDeferCallPanickingFlushIsPanicError(t *testing.T) {
	var log []string
	bad := &recFlusher{"bad", &log, func() { panic("flush failed") }}
	good := &recFlusher{"good", &log, nil}
	deferBoth := func(p *Pool) {
		_, err := p.Submit(func() error { return nil }, func(error) {
			p.DeferCall(bad)
			p.DeferCall(good)
		})
		require.NoError(t, err)
		waitReadable(t, p.Fd())
	}

	p := newPool(t, WithExternalLoop())
	deferBoth(p)
	requireFlushFailed(t, p)
	require.Equal(t, []string{"bad"}, log)
	require.True(t, pollReadable(t, p.Fd(), 0), "the loop is woken for the Flush left over")
	require.Zero(t, p.RunCompletions())
	require.Equal(t, []string{"bad", "good"}, log, "the Flush after the panic runs at the next batch")

	log = nil
	var handled []any
	p = newPool(t, WithExternalLoop(), WithPanicHandler(func(v any) { handled = append(handled, v) }))
	deferBoth(p)
	require.Equal(t, 1, p.RunCompletions())
	require.Equal(t, []any{"flush failed"}, handled)
	require.Equal(t, []string{"bad", "good"}, log)
}

// A Flush that panics when a Close called from a Callback runs the batch's
// deferred calls, on a pool without a panic handler, reaches the loop as one
// *PanicError of the Flush's value, not one wrapped in another by the
// Callback it unwound, and the Flushes after it run as the panic leaves
// the batch; a second Close then releases the pool.
func TestPanickingFlushInNestedCloseIsWrappedOnce(t *testing.T) {
	var log []string
	bad := &recFlusher{"bad", &log, func() { panic("flush failed") }}
	good := &recFlusher{"good", &log, nil}
	p, err := New(WithExternalLoop())
	require.NoError(t, err)
	_, err = p.Submit(func() error { return nil }, func(error) {
		p.DeferCall(bad)
		p.DeferCall(good)
		_ = p.Close()
	})
	require.NoError(t, err)
	waitReadable(t, p.Fd())
	requireFlushFailed(t, p)
	require.Equal(t, []string{"bad", "good"}, log)
	require.NoError(t, p.Close())
	require.Equal(t, -1, p.Fd())
}

// TestPanickingFlushRecyclesBatchLater lets a Flush panic at the end of a
// batch, which ends the batch before its elements are recycled: they wait,
// delivered, for the end of the next batch, which Close runs, so that once
// Close returns every element is recycled and the counters add up.
func TestPanickingFlushRecyclesBatchLater(t *testing.T) {
	var log []string
	bad := &recFlusher{"bad", &log, func() { panic("flush failed") }}
	good := &recFlusher{"good", &log, nil}
	p := newPool(t, WithExternalLoop(), WithMaxWorkers(1))
	for range 3 {
		_, err := p.Submit(func() error { return nil }, func(error) {
			p.DeferCall(bad)
			p.DeferCall(good)
		})
		require.NoError(t, err)
	}
	require.NoError(t, p.SubmitCo(t.Context(), func() error { return nil })) // one worker: all three published
	require.Panics(t, func() { p.RunCompletions() })
	require.Equal(t, []string{"bad"}, log)
	require.Equal(t, uint64(3), p.Stats().Delivered)
	require.NotNil(t, p.spent, "the batch waits for the end of the next one")
	require.NoError(t, p.Close())
	require.Equal(t, []string{"bad", "good"}, log, "Close flushes the rest")
	require.Nil(t, p.spent)
	require.Equal(t, int64(4), p.nrecycled.Load(), "every element recycled, the SubmitCo one's too")
	s := p.Stats()
	require.Equal(t, [3]uint64{3 + 1, 3 + 1, 3}, [3]uint64{s.Submitted, s.Completed, s.Delivered})
}

// A Flush run at the end of a batch that calls DeferCall finds the batch
// over: f is flushed at once, on every call, as Deferrer.Call does outside a
// region. A Flush that a Close from a Callback runs, inside the batch,
// defers f to after itself instead, once however often it is deferred.
func TestDeferCallFromFlush(t *testing.T) {
	var log []string
	b := &recFlusher{"b", &log, nil}
	c := &recFlusher{"c", &log, nil}
	var p *Pool
	a := &recFlusher{"a", &log, func() {
		p.DeferCall(b)
		p.DeferCall(b)
		log = append(log, "a returns")
	}}

	p = newPool(t, WithExternalLoop())
	_, err := p.Submit(func() error { return nil }, func(error) {
		p.DeferCall(a)
		p.DeferCall(c)
	})
	require.NoError(t, err)
	waitReadable(t, p.Fd())
	require.Equal(t, 1, p.RunCompletions())
	require.Equal(t, []string{"a", "b", "b", "a returns", "c"}, log, "at the end of a batch")

	log = nil
	p = newPool(t, WithExternalLoop())
	_, err = p.Submit(func() error { return nil }, func(error) {
		p.DeferCall(a)
		p.DeferCall(c)
		require.NoError(t, p.Close())
		log = append(log, "Close returned")
	})
	require.NoError(t, err)
	waitReadable(t, p.Fd())
	require.Equal(t, 1, p.RunCompletions())
	require.Equal(t, []string{"a", "a returns", "c", "b", "Close returned"}, log, "in a Close from a Callback")
}

// flushAll, called from a Flush (as a Close on the loop does), makes the
// calls left after that Flush at once, each once, even when one of them
// panics: the rest are kept for the next End.
func TestDeferrerFlushAllMakesTheCallsLeftOnce(t *testing.T) {
	var d Deferrer
	var log []string
	b, c := &recFlusher{"b", &log, nil}, &recFlusher{"c", &log, nil}
	a := &recFlusher{"a", &log, func() {
		d.flushAll()
		log = append(log, "a done")
	}}
	d.Begin()
	d.Call(a)
	d.Call(b)
	d.Call(c)
	d.End()
	require.Equal(t, []string{"a", "b", "c", "a done"}, log)

	log = nil
	p := &recFlusher{"p", &log, func() { panic("p") }}
	d.Begin()
	d.Call(a)
	d.Call(p)
	d.Call(c)
	require.PanicsWithValue(t, "p", d.End)
	require.Equal(t, []string{"a", "p"}, log, "a's flushAll stopped at the panic")
	log = nil
	d.Begin()
	d.End()
	require.Equal(t, []string{"c"}, log, "the call after the panic, kept for the next End")
}
