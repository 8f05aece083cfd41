package threadpool

import (
	"context"
	"runtime/debug"
	"time"
)

// wakeLoop tells the completion loop that requests are done. It coalesces:
// only the producer that finds no wake-up pending writes one, so a burst of
// completions costs one channel send or one eventfd write. It reports
// whether this call wrote the wake-up. Any goroutine.
//
// The channel's one slot is the pending wake-up: a send that finds it full
// fails without taking the channel's lock, so the producers of a burst after
// the first cost a load each, and the loop's receive re-arms it.
func (p *Pool) wakeLoop() bool {
	if p.notifier != nil {
		return p.notifier.notify()
	}
	select {
	case p.wakeCh <- struct{}{}:
		p.chanWakes.Add(1)
		return true
	default:
		return false
	}
}

// waitWake blocks until the loop is woken and takes the wake-up before the
// caller drains, so that a producer racing with the drain wakes the loop
// again. Loop goroutine only.
func (p *Pool) waitWake(ctx context.Context) error {
	if p.notifier != nil {
		return p.notifier.Wait(ctx)
	}
	if ctx.Done() == nil { // the pool's own loop: a plain receive, no select
		<-p.wakeCh
		return nil
	}
	select {
	case <-p.wakeCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Polling after failed waits: a wait on the loop's eventfd that fails (a read
// error) cannot be trusted to end when completions come, so the loop delivers
// what is done and waits again after a pause, doubled after each failure in
// a row from minPoll up to maxPoll, until a wait succeeds.
const (
	minPoll = time.Millisecond
	maxPoll = 64 * time.Millisecond
)

// waitFailed counts a failed wait, the failures-th in a row, and pauses before
// the next one, or until ctx ends; it returns ctx's error then. Loop
// goroutine only.
func (p *Pool) waitFailed(ctx context.Context, failures int) error {
	p.waitErrors.Add(1)
	d := maxPoll
	if failures <= 6 {
		d = minPoll << (failures - 1)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// loop is the pool's completion goroutine (not started WithExternalLoop).
func (p *Pool) loop() {
	normal := false
	defer func() {
		if !normal { // a Callback called runtime.Goexit: keep delivering
			if p.workersDeliver() {
				p.delivering.Store(false) // this loop held it
			}
			go p.loop()
		}
	}()
	p.loopGoid.Store(curGoroutineID())
	failures := 0
	for {
		if p.workersDeliver() && !p.delivering.CompareAndSwap(false, true) {
			// A worker delivers (delivery.go): put the wake-up back, for
			// a Close nested in its batch that waits for one, and wait
			// until the worker lets go, which wakes this loop again if
			// anything is left.
			p.wakeLoop()
			<-p.resume
		} else {
			// Drain and check for the stop before waiting: a loop
			// restarted after a Callback called runtime.Goexit may have
			// completions, or Close's stop, waiting whose wake-up the old
			// loop took.
			p.drain()
			if p.stopLoop.Load() {
				// Every worker has exited: this drain takes the rest.
				// The loop keeps the batch state: nobody delivers after it.
				p.drain()
				break
			}
			if p.workersDeliver() {
				p.delivering.Store(false)
				if p.done.Load() != nil {
					// Pushed by a worker that found the loop delivering.
					continue
				}
			}
		}
		if err := p.waitWake(context.Background()); err != nil {
			failures++
			p.waitFailed(context.Background(), failures)
			continue
		}
		failures = 0
	}
	normal = true
	if p.notifier != nil {
		p.notifier.Close()
	}
	close(p.loopDone)
}

// RunCompletions delivers every finished request on the calling goroutine,
// in one batch, and returns how many callbacks it ran itself (not those that
// a RunCompletions, Close or Shutdown nested in one of them delivered, which
// Stats also counts as a drain of its own). It is for pools made
// WithExternalLoop: call it when Fd is readable (it takes the readiness
// itself). Once Close or Shutdown has delivered every callback it returns
// 0; after one called from a Func, or a Shutdown whose ctx ended, it still
// delivers the callbacks due (see Close). By caller:
//
//   - The loop goroutine (the one goroutine at a time that polls Fd): as
//     above. The loop may move to another goroutine between calls.
//   - A Callback: it delivers the rest of the batch nested, like a nested
//     event-loop iteration; Flushes deferred by those callbacks still run at
//     the end of the outer batch.
//   - A Func, or any goroutine while another one delivers: not allowed, as it
//     would run callbacks on a worker or two batches at once. Race builds
//     (-race) panic with a message naming this rule; other builds do not
//     check.
//
// On a pool that runs its own completion goroutine it does nothing and
// returns 0, from any goroutine.
func (p *Pool) RunCompletions() int {
	if !p.external {
		return 0
	}
	if raceBuild {
		p.claimDrain() // before Clear takes the wake-up
	}
	p.notifier.Clear()
	return p.drain()
}

// DeferCall defers f.Flush to the end of the current batch of completions:
// however many callbacks of the batch defer the same f, it is flushed once,
// after the last callback, in order of first deferral (see Deferrer for what
// "the same" means). A nil f is ignored. By caller:
//
//   - A Callback of this pool: as above. A Close or Shutdown called from a
//     Callback flushes what the batch deferred so far before it returns,
//     and before each wait for a running Func (see Close).
//   - A Flush run at the end of its batch: the batch is over, so f is flushed
//     at once, on every call, as Deferrer.Call does outside a region. A Flush
//     run by a Close or Shutdown called from a Callback, inside the batch,
//     defers f to after the Flushes deferred so far, once.
//   - The loop goroutine outside a batch (WithExternalLoop, the goroutine
//     that calls RunCompletions, between calls): f is flushed at once.
//   - A Func, or any other goroutine: not allowed, as the batch belongs to the
//     completion loop and has no lock. Race builds (-race) panic with a
//     message naming this rule for a call from a Func, a call while another
//     goroutine delivers completions, and, with the pool's own completion
//     goroutine, any call off it; other builds do not check.
//
// After Close or Shutdown has returned, the pool's own completion goroutine is
// gone and DeferCall is not allowed; WithExternalLoop, the loop goroutine may
// still call it, and f is flushed at once.
func (p *Pool) DeferCall(f Flusher) {
	if raceBuild {
		p.checkDeferCall()
	}
	p.deferrer.Call(f)
}

// drain delivers every finished request inside one Deferrer region and
// returns how many it delivered. A Callback may nest another drain (through
// RunCompletions, Shutdown or Close): the nested one goes on with the same
// batch, so nothing is delivered twice or out of order. Loop goroutine only.
func (p *Pool) drain() int {
	if raceBuild {
		p.claimDrain()
	}
	p.deferrer.Begin()
	p.drainDepth++
	n := 0
	defer func() {
		// Deferred, so that a drain ended by a panicking Callback counts
		// what it delivered, the panicking one included.
		p.countDrain(n)
		p.endDrain()
	}()
	for {
		e := p.batch
		if e == nil {
			if e = p.takeDone(); e == nil {
				break
			}
		}
		p.batch = e.doneNext
		e.doneNext = nil
		n++
		p.deliver(e)
	}
	return n
}

// flushNested runs the Flushes deferred so far when Close or Shutdown runs
// nested in a batch (called from a Callback), so that what the batch deferred
// is flushed before Close returns, not after; and, called from a Flush, the
// Flushes deferred after that one, which would wait for it to return while
// a Func that Close waits for may wait for them. Loop goroutine only.
func (p *Pool) flushNested() {
	if p.drainDepth > 0 || p.deferrer.running != nil {
		p.deferrer.flushAll()
	}
}

// countDrain adds a drain of n callbacks to the statistics. Loop goroutine
// only.
func (p *Pool) countDrain(n int) {
	if n == 0 {
		return
	}
	p.drains.Add(1)
	p.delivered.Add(uint64(n))
	if uint64(n) > p.maxDrainSt.Load() {
		p.maxDrainSt.Store(uint64(n))
	}
}

// endDrain closes the drain's region, which runs the deferred Flushers, and
// at the outermost level recycles the delivered elements with one CAS. It also
// runs when a Callback panics, so the pool stays consistent and the loop is
// woken again for what is left of the batch.
//
// A Flush whose panic is re-raised (no panic handler, or one that panics)
// leaves before the recycling: the delivered elements stay on spent, and the
// end of the next outermost drain recycles them with its own. Nothing is
// lost: their callbacks ran and were counted, no Handle can reach them
// (Cancel finds them neither queued nor in a hand), and a Close or Shutdown
// that delivers the last callbacks ends with such a drain. (On the pool's own
// completion goroutine such a panic ends the program.)
func (p *Pool) endDrain() {
	if p.batch != nil {
		// A Callback panicked or called runtime.Goexit in the middle of the
		// batch, after its wake-up was taken: re-arm it, so that the rest of
		// the batch does not wait for the next completion.
		p.wakeLoop()
	}
	p.drainDepth--
	if raceBuild && p.drainDepth == 0 {
		defer p.drainOwner.Store(0) // after the Flushes, even a panicking one
	}
	p.deferrer.End()
	if p.drainDepth > 0 || p.spent == nil {
		return
	}
	n := 0
	for e := p.spent; e != nil; e = e.doneNext {
		e.next = e.doneNext
		n++
	}
	p.recycle(p.spent, p.spentTail, n)
	p.spent, p.spentTail = nil, nil
}

// deliver runs one request's callback. The element is kept (on the spent
// list) until the outermost drain ends, so its memory is not reused while its
// callback runs.
func (p *Pool) deliver(e *element) {
	cb, err := e.cb, e.err
	if p.spentTail != nil {
		p.spentTail.doneNext = e
	} else {
		p.spent = e
	}
	p.spentTail = e
	p.finishOne()
	if cb != nil {
		p.callback(cb, err)
	}
}

// loopPanicHandler returns what the completion loop does with the value of
// a panicking Callback or Flush: hand it to h, the pool's panic handler, or,
// without one, re-raise it as a *PanicError that carries the original stack
// (the deferred functions that recover it run before the stack unwinds). A
// value that already is a *PanicError is re-raised as it is: it comes from a
// delivery or Flush nested in the panicking Callback (a Close, Shutdown or
// RunCompletions it called), and carries the first stack. The calls a batch
// deferred after a panicking Flush stay recorded for the end of the next
// batch, and the loop is woken for it at once (Fd becomes readable, while
// the pool holds it), as for what is left of a batch after a panicking
// Callback, so that they do not wait for the next completion; once a Close
// has released Fd, the next Close or RunCompletions runs them.
func loopPanicHandler(h func(v any)) func(v any) {
	if h != nil {
		return h
	}
	return func(v any) {
		if pe, ok := v.(*PanicError); ok {
			panic(pe)
		}
		panic(&PanicError{Value: v, Stack: debug.Stack()})
	}
}

// callback runs cb and hands a panic to p.panicHandler (loopPanicHandler).
func (p *Pool) callback(cb Callback, err error) {
	normal := false
	defer func() {
		if normal {
			return
		}
		v := recover()
		if v == nil {
			return // runtime.Goexit: it cannot be stopped; loop restarts itself
		}
		p.panicHandler(v)
	}()
	cb(err)
	normal = true
}
