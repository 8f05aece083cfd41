package threadpool

import (
	"context"
	"fmt"
)

// This file lets the pool tell who calls it: one of its own workers (that is,
// a Func), the completion loop (a Callback), or any other goroutine. Close,
// Shutdown and SubmitCo must not wait for the very worker they run on.

// workerSelf is a worker's identity, for the pool methods a Func may call on
// the worker that runs it. Worker goroutine only.
type workerSelf struct {
	goid    uint64 // the worker goroutine's id
	closing int    // Close and Shutdown calls of this worker in progress (they nest)
}

// enterWorker registers the calling goroutine as worker w. Worker goroutine,
// once, before it takes a request.
func (p *Pool) enterWorker(w *worker) {
	w.self.goid = curGoroutineID()
	p.workerIDs.Store(w.self.goid, w)
}

// leaveWorker unregisters worker w as it exits, after it stopped counting in
// Pool.workers, and wakes the SubmitCo callers. While the pool closes it also
// wakes the Funcs waiting in Close or Shutdown for the other workers, and the
// last worker to leave stops the reaper, and the pool's own completion loop
// once the loop has delivered everything: a Close or Shutdown that returned without waiting for
// every worker (called from a Func, or whose context ended) leaves no
// goroutine behind. Worker goroutine.
func (p *Pool) leaveWorker(w *worker) {
	p.workerIDs.Delete(w.self.goid)
	left := make(chan struct{})
	close(*p.left.Swap(&left))
	if !p.closing.Load() {
		return
	}
	p.mu.Lock()
	p.signalWaiters()
	p.mu.Unlock()
	p.stopWhenGone()
}

// stopWhenGone stops the reaper, and the pool's own completion loop once it
// has delivered everything, if no worker is left and nothing is queued: the
// last worker to leave a closing pool calls it, and so does a Close or
// Shutdown that returns without waiting for the workers, since none may be
// left to leave. The pool must be closing.
func (p *Pool) stopWhenGone() {
	p.mu.Lock()
	last := p.workers == 0 && p.head == nil
	p.mu.Unlock()
	if !last {
		return
	}
	p.stopReaper()
	if !p.external {
		// No request is queued or running and none can be accepted: every
		// completion is published once a Cancel that took a request from the
		// queue has published it, and Cancel holds cancelMu meanwhile.
		p.cancelMu.Lock()
		p.stopLoop.Store(true)
		p.cancelMu.Unlock()
		p.wakeLoop()
	}
}

// caller tells who calls the pool: w is the worker when the caller is one of
// this pool's workers, and onLoop is true when it is the pool's own
// completion loop (a Callback): its completion goroutine, or worker w
// delivering in its place (delivery.go). With w set and onLoop false, the
// caller is a Func. It looks the caller's goroutine id up, which costs a
// couple of microseconds: never on the request path.
func (p *Pool) caller() (w *worker, onLoop bool) {
	id := curGoroutineID()
	if v, ok := p.workerIDs.Load(id); ok {
		w := v.(*worker) // the caller's own: its fields are the caller's
		return w, w.delivering
	}
	return nil, !p.external && p.loopGoid.Load() == id
}

// callerFunc returns the worker the calling goroutine is when it runs a
// Func, or nil when it is not one of this pool's workers or delivers as the
// loop.
func (p *Pool) callerFunc() *worker {
	if w, onLoop := p.caller(); !onLoop {
		return w
	}
	return nil
}

// nextLeave returns a channel that closes when a worker next leaves the
// closing pool (leaveWorker), or a Func starts closing it: what waitOthers
// and waitWorkersGone wait for. mu held.
func (p *Pool) nextLeave() <-chan struct{} {
	if p.waiters == nil {
		p.waiters = make(chan struct{})
	}
	return p.waiters
}

// signalWaiters wakes the Funcs waiting in waitOthers. mu held.
func (p *Pool) signalWaiters() {
	if p.waiters != nil {
		close(p.waiters)
		p.waiters = nil
	}
}

// waitOthers is Close and Shutdown called from a Func: it waits, on worker w,
// until nothing is queued and no other worker remains, bar the workers whose
// Funcs wait here too. While no other worker is free to take a queued
// request (none is idle, on its way or may start), it runs the request
// itself, as the worker it is. It returns ctx's error when
// ctx ends first (checked before each request it runs, which it cannot
// interrupt). The pool must be closing.
func (p *Pool) waitOthers(ctx context.Context, w *worker) error {
	p.mu.Lock()
	if w.self.closing == 0 {
		p.funcClosers++
		p.signalWaiters() // the others may be waiting for this worker
	}
	w.self.closing++
	p.mu.Unlock()
	defer func() { // also when a Func run here calls runtime.Goexit
		p.mu.Lock()
		if w.self.closing--; w.self.closing == 0 {
			p.funcClosers--
		}
		p.mu.Unlock()
	}()
	for {
		p.mu.Lock()
		alone := p.workers <= p.funcClosers
		// Run a request here while no other worker will take it: none is
		// left, or none is idle, on its way, or may still start (the
		// others' Funcs may even wait for it).
		if (alone || p.waiting(0) > 0) && ctx.Err() == nil {
			// Take what is left in a hand (this worker's own, perhaps:
			// its Func is the one closing), queued first, then what is
			// queued.
			e := p.steal()
			if e == nil {
				if e = p.head; e != nil {
					p.unqueue(e)
				}
			}
			if e != nil {
				p.running++
				p.mu.Unlock()
				p.runHere(e)
				continue
			}
		}
		if alone && p.head == nil && (ctx.Err() == nil || p.inHand.Load() == 0) {
			p.mu.Unlock()
			return nil
		}
		wake := p.nextLeave()
		p.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// runHere runs e, taken off the queue or out of a hand and counted in
// Pool.running, on the calling worker and publishes its result, like any
// worker would.
func (p *Pool) runHere(e *element) {
	defer func() { // also when e's Func calls runtime.Goexit
		p.mu.Lock()
		p.running--
		p.mu.Unlock()
	}()
	p.run(e, nil)
}

// runCoHere runs a SubmitCo request that no worker was free to take when it
// was queued, or whose worker left, on the calling goroutine, if that is one
// of this pool's workers (a Func calling SubmitCo) and the request is still
// queued: no other worker may ever come for it. It reports whether it ran it;
// e's result is then waiting in e.coCh.
func (p *Pool) runCoHere(e *element, gen uint64) bool {
	if p.callerFunc() == nil {
		return false
	}
	p.mu.Lock()
	if e.gen != gen || !p.takeUnstarted(e) {
		p.mu.Unlock()
		return false
	}
	p.running++
	p.mu.Unlock()
	p.runHere(e)
	return true
}

// Messages of the panics that race builds raise for calls on the wrong
// goroutine.
const (
	msgDeferCall = "threadpool: DeferCall must be called on the pool's completion loop: " +
		"from a Callback (or, WithExternalLoop, the goroutine that calls RunCompletions), " +
		"not from a Func or another goroutine"
	msgDeliver = "threadpool: RunCompletions, Close and Shutdown of a pool WithExternalLoop " +
		"must be called from one goroutine at a time, the loop's, and never from a Func"
)

// checkDeferCall panics, in race builds, when DeferCall is called off the
// completion loop: while another goroutine delivers completions, from a Func,
// or, for a pool with its own completion goroutine, from any other goroutine.
func (p *Pool) checkDeferCall() {
	me := curGoroutineID()
	owner := p.drainOwner.Load()
	switch {
	case owner == me:
		return
	case owner != 0:
		panic(fmt.Sprintf("%s (called on goroutine %d while goroutine %d delivers)", msgDeferCall, me, owner))
	case !p.external && p.loopGoid.Load() != me, p.isFunc(me):
		panic(fmt.Sprintf("%s (called on goroutine %d)", msgDeferCall, me))
	}
}

// claimDrain records, in race builds, that the calling goroutine delivers
// completions, and panics when another goroutine does so at the same time or
// the caller is a Func. The outermost drain releases the claim as it ends.
// Loop goroutine only.
func (p *Pool) claimDrain() {
	me := curGoroutineID()
	if p.isFunc(me) {
		panic(fmt.Sprintf("%s (called from a Func, on goroutine %d)", msgDeliver, me))
	}
	if !p.drainOwner.CompareAndSwap(0, me) {
		if owner := p.drainOwner.Load(); owner != me {
			panic(fmt.Sprintf("%s (called on goroutine %d while goroutine %d delivers)", msgDeliver, me, owner))
		}
	}
}

// isFunc reports whether the calling goroutine, whose id is me, is one of
// this pool's workers running a Func: not one delivering as the loop.
func (p *Pool) isFunc(me uint64) bool {
	v, ok := p.workerIDs.Load(me)
	return ok && !v.(*worker).delivering
}
