package threadpool

import "sync/atomic"

// maxFree bounds the recycled elements waiting for alloc: a burst beyond it
// leaves the extra elements to the garbage collector. The free list that
// alloc takes them to holds at most one such chain, so a pool keeps about
// twice maxFree elements at most.
const maxFree = 4096

// element is one request. Elements are recycled: after the callback has run
// (or a SubmitCo call and its worker are both done with it) the element goes
// back to the pool, and its generation is bumped when it serves the next
// request, so a stale Handle never matches that one. Until then a stale Handle
// matches a request that is neither queued nor in a hand, which Cancel leaves
// alone.
type element struct {
	// pool is written once when the element is allocated.
	pool *Pool

	// fn, cb and co are written by the submitter under Pool.mu before the
	// element is queued; the worker reads fn, the loop reads cb afterwards.
	fn Func
	cb Callback
	co bool

	// gen counts the element's lives: alloc bumps it as a life begins.
	// Guarded by Pool.mu, so Cancel, which checks it under Pool.mu, sees
	// the life of the request it finds queued or in a hand.
	gen uint64

	// prev and next link the pending queue (guarded by Pool.mu); next also
	// links the free list (guarded by Pool.mu) and a chain of recycled
	// elements on its way there (owned by the recycler until pushed).
	prev, next *element

	// queued is set while the element waits on the pending queue: the only
	// state Cancel needs. A request joins and leaves the queue under Pool.mu
	// only (a worker dequeuing it, a canceler, Close). Guarded by Pool.mu.
	queued bool

	// hold is set, under Pool.mu, while the element waits in a worker's
	// hand (hand.go): off the queue, not started. Whoever runs or cancels
	// it clears it first (Pool.claim), with or without mu.
	hold atomic.Bool

	// err is the result. It is written once, by the worker or the canceler,
	// before the element is published (doneNext push or coCh send).
	err error

	// doneNext links the pool's done stack (written by the pusher before the
	// CAS) and then the loop's batch (loop goroutine only).
	doneNext *element

	// coCh carries a SubmitCo result to the waiting caller; made once, cap 1.
	coCh chan error
	// refs counts the SubmitCo caller and the completer; the last one to
	// release the element recycles it.
	refs atomic.Int32
}

// Handle identifies one submitted request for Cancel. The zero Handle matches
// no request. A Handle stays safe to use after its request finished: Cancel
// then returns false, even when the element behind it serves a new request.
type Handle struct {
	e   *element
	gen uint64
}

// enqueue appends e to the pending queue. mu held.
func (p *Pool) enqueue(e *element) { p.link(e, p.tail, nil) }

// enqueueFront puts e at the front of the pending queue. mu held.
func (p *Pool) enqueueFront(e *element) { p.link(e, nil, p.head) }

// link puts e on the pending queue between prev and next, neighbours on it
// (nil at either end), the reverse of unqueue. mu held.
func (p *Pool) link(e, prev, next *element) {
	e.prev, e.next = prev, next
	if prev != nil {
		prev.next = e
	} else {
		p.head = e
	}
	if next != nil {
		next.prev = e
	} else {
		p.tail = e
	}
	e.queued = true
	p.queued++
}

// unqueue removes e from the pending queue. mu held.
func (p *Pool) unqueue(e *element) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		p.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		p.tail = e.prev
	}
	e.prev, e.next = nil, nil
	e.queued = false
	p.queued--
}

// alloc takes an element from the free list, refilled from the recycled
// chain, or makes one, and begins its next life (gen). mu held.
func (p *Pool) alloc() *element {
	e := p.free
	if e == nil {
		if e = p.recycled.Swap(nil); e == nil {
			return &element{pool: p, gen: 1}
		}
		// A chain pushed between the Swap and this Store is not counted:
		// the bound is loose, not exact.
		p.nrecycled.Store(0)
	}
	p.free = e.next
	e.next = nil
	e.gen++
	return e
}

// recycle resets the chain of elements from head to tail (linked by next)
// and hands it back for alloc, without taking Pool.mu: the loop recycles a
// whole batch with one CAS. When maxFree elements are already waiting, the
// chain is left to the garbage collector. Any goroutine that owns the chain.
func (p *Pool) recycle(head, tail *element, n int) {
	for e := head; e != nil; e = e.next {
		e.fn, e.cb, e.err, e.co = nil, nil, nil, false
		e.doneNext = nil
	}
	if p.nrecycled.Load() >= maxFree {
		return
	}
	p.nrecycled.Add(int64(n))
	for {
		old := p.recycled.Load()
		tail.next = old
		if p.recycled.CompareAndSwap(old, head) {
			return
		}
	}
}

// pushDone publishes a finished element to the loop: a lock-free push on the
// done stack. Any goroutine.
func (p *Pool) pushDone(e *element) {
	for {
		old := p.done.Load()
		e.doneNext = old
		if p.done.CompareAndSwap(old, e) {
			return
		}
	}
}

// takeDone moves everything on the done stack into the loop's batch, oldest
// first. Loop goroutine only.
func (p *Pool) takeDone() *element {
	if p.done.Load() == nil { // a plain load: no locked swap when empty
		return nil
	}
	head := p.done.Swap(nil)
	var prev *element
	for head != nil {
		next := head.doneNext
		head.doneNext = prev
		prev, head = head, next
	}
	p.batch = prev
	return prev
}
