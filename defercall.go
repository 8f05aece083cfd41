package threadpool

import "reflect"

// A Flusher is work that can be deferred to the end of a batch: a notifier to
// signal, a buffered writer to flush. Flush is called on the goroutine that
// ends the batch.
type Flusher interface {
	Flush()
}

// Deferrer collapses repeated calls into one per batch, like QEMU's
// defer_call. Between Begin and the matching End, Call(f) records f once, no
// matter how often it is called with the same f; the outermost End then calls
// Flush on each recorded f, in order of first Call. Outside any region Call
// flushes at once.
//
// The zero Deferrer is ready to use. A Deferrer belongs to one goroutine at a
// time: it has no lock.
//
// Deduplication compares Flushers with ==, so a Flusher should be a pointer
// (or another comparable value). A Flusher whose dynamic type is not
// comparable is never deduplicated: each Call of it flushes once.
type Deferrer struct {
	depth int       // open regions
	list  []Flusher // recorded calls, in order of first Call
	spare []Flusher // an emptied list kept for reuse

	// onPanic, when set, receives the value of a panicking Flush and the
	// remaining calls still run. Written once by the Pool before use.
	onPanic func(v any)
}

// Begin opens a region. Regions nest; only the outermost End flushes.
func (d *Deferrer) Begin() { d.depth++ }

// End closes the region opened by the last Begin. When it closes the
// outermost region it calls Flush once for every distinct Flusher recorded,
// in order of first Call, and empties the list. The list is taken out before
// it runs, so a Flush that calls Call or opens a region of its own neither
// loses nor repeats calls: what it records runs at its own outermost End, or
// at once. If a Flush panics (and no handler is set) the panic propagates and
// the calls after it stay recorded for the next outermost End.
//
// End without a matching Begin panics.
func (d *Deferrer) End() {
	if d.depth <= 0 {
		panic("threadpool: Deferrer.End without matching Begin")
	}
	d.depth--
	if d.depth > 0 {
		return
	}
	for len(d.list) > 0 {
		list := d.list
		d.list, d.spare = d.spare[:0], nil
		d.run(list)
		clear(list)
		d.spare = list[:0]
	}
}

// Call records f for the end of the current region, once per distinct f, or
// calls f.Flush at once when no region is open. A nil f is ignored.
func (d *Deferrer) Call(f Flusher) {
	if f == nil {
		return
	}
	if d.depth == 0 {
		d.run1(f)
		return
	}
	if reflect.TypeOf(f).Comparable() {
		for _, g := range d.list {
			if g == f {
				return
			}
		}
	}
	d.list = append(d.list, f)
}

// Depth reports how many regions are open.
func (d *Deferrer) Depth() int { return d.depth }

// run flushes list in order. If a Flush panics without a handler, the calls
// after it are put back in front of whatever was recorded meanwhile.
func (d *Deferrer) run(list []Flusher) {
	i := 0
	defer func() {
		if i < len(list) {
			rest := append([]Flusher(nil), list[i+1:]...)
			d.list = append(rest, d.list...)
		}
	}()
	for ; i < len(list); i++ {
		d.run1(list[i])
	}
}

// run1 calls f.Flush, handing a panic to onPanic when one is set.
func (d *Deferrer) run1(f Flusher) {
	if d.onPanic != nil {
		defer func() {
			if v := recover(); v != nil {
				d.onPanic(v)
			}
		}()
	}
	f.Flush()
}
