package threadpool

import (
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
