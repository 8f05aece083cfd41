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
// time: it has no lock. It must not be copied after first use (go vet
// reports copies): a copy shares the recorded calls' storage with the
// original.
//
// Deduplication compares Flushers with ==, by value: two Flushers are the same
// when they have the same dynamic type and equal values, so a Flusher should
// be a pointer (or another comparable value). A Flusher whose value cannot be
// compared (a func, map or slice, or a struct or interface holding one, even
// inside a comparable static type) is never deduplicated and never makes Call
// panic: each Call of it flushes once. Call costs O(1) however many distinct
// Flushers a region records, and allocates nothing once the Deferrer has
// recorded as many before.
type Deferrer struct {
	_ noCopy

	depth int       // open regions
	list  []Flusher // recorded calls, in order of first Call
	spare []Flusher // an emptied list kept for reuse

	// seen holds the comparable Flushers of list once it is longer than
	// scanMax; a shorter list is scanned instead. Kept, emptied, for reuse.
	seen    map[Flusher]struct{}
	indexed bool // seen holds list's comparable Flushers

	// running is the list whose calls the innermost run in progress makes,
	// and next the index of its next call; nil when none runs. A Close
	// called from one of its Flushes runs the rest (flushAll), so that no
	// Flush waits behind one that waits for it.
	running []Flusher
	next    int

	// onPanic, when set, receives the value of a panicking Flush and the
	// remaining calls still run; should onPanic panic itself, they stay
	// recorded as without it. Written once by the Pool before use.
	onPanic func(v any)
	// onLeft, when set, is called when a Flush that panicked (or called
	// runtime.Goexit) at an outermost End left calls recorded for the next
	// one. Written once by the Pool before use.
	onLeft func()
}

// noCopy makes go vet's copylocks check report copies of the struct that
// holds it: its methods are those of a lock, and do nothing.
type noCopy struct{}

func (*noCopy) Lock()   {}
func (*noCopy) Unlock() {}

// scanMax is the longest list that Call scans for a duplicate; beyond it Call
// looks the Flusher up in a map.
const scanMax = 8

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
	d.flush()
}

// flush runs every recorded call, and those the calls record meanwhile, and
// empties the list.
func (d *Deferrer) flush() {
	for len(d.list) > 0 {
		list := d.list
		d.list, d.spare = d.spare[:0], nil
		d.unindex(list)
		d.run(list)
		clear(list)
		if len(d.list) == 0 && cap(list) > cap(d.list) {
			// Nothing recorded meanwhile: the next region records into
			// the longer list, which has room for as many as this one.
			list, d.list = d.list, list[:0]
		}
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
	if canCompare(f) {
		if d.recorded(f) {
			return
		}
		if d.indexed {
			d.seen[f] = struct{}{}
		}
	}
	d.list = append(d.list, f)
	if !d.indexed && len(d.list) > scanMax {
		d.index()
	}
}

// recorded reports whether the comparable f is on the list already.
func (d *Deferrer) recorded(f Flusher) bool {
	if d.indexed {
		_, ok := d.seen[f]
		return ok
	}
	for _, g := range d.list {
		if g == f { // cannot panic: f is comparable
			return true
		}
	}
	return false
}

// index puts the comparable Flushers of the list into seen, which Call then
// consults instead of scanning the list.
func (d *Deferrer) index() {
	if d.seen == nil {
		d.seen = make(map[Flusher]struct{})
	}
	for _, g := range d.list {
		if canCompare(g) {
			d.seen[g] = struct{}{}
		}
	}
	d.indexed = true
}

// unindex empties seen of the Flushers of list, taken out of the Deferrer to
// run, in O(len(list)): the map keeps its room for the next batch.
func (d *Deferrer) unindex(list []Flusher) {
	if !d.indexed {
		return
	}
	for _, g := range list {
		if canCompare(g) {
			delete(d.seen, g)
		}
	}
	if len(d.seen) > 0 {
		clear(d.seen) // keys unequal to themselves, such as a NaN
	}
	d.indexed = false
}

// canCompare reports whether f can be compared with == (and used as a map
// key) without a panic: its dynamic value, not just its type, must be
// comparable. Pointers, the usual Flushers, take the quick way.
func canCompare(f Flusher) bool {
	t := reflect.TypeOf(f)
	if t.Kind() == reflect.Pointer {
		return true
	}
	return t.Comparable() && reflect.ValueOf(f).Comparable()
}

// Depth reports how many regions are open.
func (d *Deferrer) Depth() int { return d.depth }

// run flushes list in order, unless flushAll, called from one of its
// Flushes, makes the rest of its calls first. If a Flush panics without a
// handler, the calls after it are put back in front of whatever was
// recorded meanwhile.
func (d *Deferrer) run(list []Flusher) {
	outer, outerNext := d.running, d.next
	d.running, d.next = list, 0
	normal := false
	defer func() {
		rest := list[d.next:] // the calls after the one that panicked
		d.running, d.next = outer, outerNext
		if normal {
			return
		}
		d.list = append(append([]Flusher(nil), rest...), d.list...)
		if d.indexed {
			clear(d.seen)
			d.indexed = false
		}
		if len(d.list) > scanMax {
			d.index()
		}
		if len(d.list) > 0 && d.depth == 0 && d.onLeft != nil {
			// Inside a region (a Close from a Callback flushing the
			// batch early) the enclosing End runs them anyway.
			d.onLeft()
		}
	}()
	d.runRest()
	normal = true
}

// runRest makes the calls left in the list that the innermost run in
// progress flushes, if any, counting each before it is made, so that each
// runs once however the runs nest.
func (d *Deferrer) runRest() {
	for d.next < len(d.running) {
		f := d.running[d.next]
		d.next++
		d.run1(f)
	}
}

// flushAll is flush for a Close called from a Flush, or from a Callback
// inside a region: it first makes the calls left in the list being flushed,
// which would otherwise wait for the calling Flush to return, then runs
// every recorded call.
func (d *Deferrer) flushAll() {
	d.runRest()
	d.flush()
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
