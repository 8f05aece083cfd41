package threadpool

// Who delivers: the completion goroutine, or the worker of a lone request.
//
// A lone request costs two goroutine switches when the completion goroutine
// delivers it: the submitter wakes a worker, and the worker wakes the
// completion goroutine, each a channel send that readies a parked goroutine
// and a park on the way back. With one request in flight that is most of the
// round trip: about 370ns on the 2-CPU VM, against 250ns for a goroutine per
// request (one switch and a goroutine start).
//
// So, with its own completion goroutine woken through a channel (the
// default), the pool lets the worker that finishes the only accepted request
// not yet over deliver it itself, in place of the completion goroutine: it
// becomes the loop for one batch, runs the callbacks and the Flushes they
// deferred, and goes back to the queue. No wake-up is written and the
// completion goroutine stays parked. A lone round trip then took 0.63-0.68x
// the time, and reads one at a time came out 1.15-1.21x as many
// (cmd/tpbench/README.md). At depth, or while a batch is being
// delivered, the completion goroutine delivers, as ever: batching, what the
// pool is for, needs completions to gather, and one delivering goroutine to
// gather them.
//
// The batch state (Pool.deferrer, batch, spent, drainDepth) belongs to whoever
// holds Pool.delivering, taken with a compare-and-swap: the completion
// goroutine whenever it delivers, or the worker. Whoever lets go looks at the
// done stack again and wakes the completion goroutine for what was pushed
// meanwhile, so nothing waits for the next completion.
//
// While it delivers, the worker is the loop in every respect, and not a
// worker: it leaves the pool's count of workers that take requests, so that
// a Callback that waits for a Func (through SubmitCo, or a channel a Func
// sends on) never waits for the very worker it runs on: as it leaves, the
// pool wakes or starts another for what is queued, up to max (leaveWorkers).
// It still counts as a live goroutine (Pool.lent): in Stats.Workers, and
// toward min in SetLimits, the reaper and the replacement of a worker that
// ended in runtime.Goexit. To the pool's methods it is
// the completion loop (Pool.caller): a Close or Shutdown from its Callback
// delivers the rest nested, waits for the other workers and returns, and the
// worker exits once the batch is over. It counts as a worker again when it
// next looks for work, and exits then if the pool is above max, or closing
// with nothing queued.
//
// The completion goroutine, woken while a worker delivers (a Close's nested
// wait takes wake-ups too), puts the wake-up back for that wait, parks until
// the worker lets go (Pool.resume) and waits again.

// workersDeliver reports whether the pool lets a lone request's worker
// deliver it: it runs its own completion goroutine, woken through a channel
// (New makes Pool.resume for those alone). Any goroutine.
func (p *Pool) workersDeliver() bool { return p.resume != nil }

// mayDeliver reports whether worker w may deliver the request it has just
// pushed on the done stack itself, and marks it to do so after its hand is
// played (Pool.deliverHere): the pool has its own completion goroutine woken
// through a channel, is not closing, and that request is the only accepted
// one not over. Worker w.
func (p *Pool) mayDeliver(w *worker) bool {
	if w == nil || !p.workersDeliver() || p.pending.Load() != 1 || p.closing.Load() {
		return false
	}
	w.deliver = true
	return true
}

// deliverHere delivers what is done on worker w, as the completion loop,
// unless the completion goroutine or another worker delivers already: then
// it wakes the loop, as any publisher does, for the one delivering may wait
// for that wake-up, nested (a Close from a Callback). Worker w, after its
// last request was published without waking the loop (mayDeliver).
func (p *Pool) deliverHere(w *worker) {
	w.deliver = false
	if p.done.Load() == nil {
		return // delivered already
	}
	if !p.delivering.CompareAndSwap(false, true) {
		p.wakeLoop()
		return
	}
	p.mu.Lock()
	p.doneRunning(w)
	p.leaveWorkers(w)
	p.mu.Unlock()
	w.delivering = true
	p.drain()
	p.endDelivery(w)
}

// endDelivery lets go of the batch state that worker w held as the loop,
// resumes the completion goroutine if it waits for that, and wakes it for
// what was pushed meanwhile, or for its stop. Worker w, also when a Callback
// it ran called runtime.Goexit.
func (p *Pool) endDelivery(w *worker) {
	w.delivering = false
	p.delivering.Store(false)
	select {
	case p.resume <- struct{}{}:
	default:
	}
	if p.done.Load() != nil || p.stopLoop.Load() {
		p.wakeLoop()
	}
}

// leaveWorkers takes worker w, about to deliver as the loop, out of the
// count of workers until it next looks for work (rejoinWorkers), and wakes
// or starts a worker for what was queued meanwhile: with w out, the pool may
// start one more, and a Callback w runs may wait for that very request. mu
// held.
func (p *Pool) leaveWorkers(w *worker) {
	p.workers--
	p.lent++
	w.rejoin = true
	p.dispatch()
}

// rejoinWorkers counts worker w, which delivered as the loop, among the
// workers again. mu held, worker w.
func (p *Pool) rejoinWorkers(w *worker) {
	if w.rejoin {
		w.rejoin = false
		p.lent--
		p.workers++
	}
}

// live returns the live worker goroutines: those counted as workers, and
// those delivering as the loop, out of that count meanwhile. It is what the
// minimum of workers and Stats count; the maximum counts workers alone. mu
// held.
func (p *Pool) live() int { return p.workers + p.lent }

// waitWorkersGone waits until no worker is counted: Close or Shutdown from a
// Callback that a worker delivers, which cannot wait for its own goroutine
// (Pool.wg). The pool must be closing, so that every worker leaving wakes
// it (leaveWorker).
func (p *Pool) waitWorkersGone() {
	p.mu.Lock()
	for p.workers > 0 {
		wake := p.nextLeave()
		p.mu.Unlock()
		<-wake
		p.mu.Lock()
	}
	p.mu.Unlock()
}
