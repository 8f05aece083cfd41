package threadpool

// A worker's hand: the next requests it runs, taken off a long queue at once.
//
// Every request leaves the queue under Pool.mu, and with many processors the
// workers queue up for it: on 16 cores, eight jobs at iodepth 64 spent a third
// of the pool's CPU time in that mutex (cmd/tpbench/README.md). So when every
// worker is busy and more requests wait than there are workers, a worker that
// takes a request also takes its share of the rest, up to maxHand, and runs
// them one after the other without the mutex. A request in a hand has not
// started: Cancel, Close and a SubmitCo caller that runs its own request
// claim it as they would take it off the queue. On those 16 cores, eight
// jobs at iodepth 64 went from 0.85M to 1.13-1.21M reads a second with a
// tenth fewer cores, sixteen jobs from 0.85M to 1.29-1.46M; the 99th
// percentile latency grew by about half (1.5-2.0 to 2.5-3.0 ms at eight
// jobs), as a request in the hand of a worker whose thread was descheduled
// waits for it. In the same benchmarks on two processors no hand formed (the
// pool never had all of its 64 workers started with none idle); Funcs that
// block long enough to keep every worker busy make hands on any machine.
//
// Whoever runs or cancels a request in a hand first claims it (element.hold,
// true to false), so each one is taken exactly once: by its worker, by
// another worker that looks for work (which takes from the hands before the
// queue, since their requests were queued first, so that no request waits in
// the hand of a worker whose Func blocks, perhaps on that very request, while
// later ones run), by Cancel, by Close, or by a Func that closes the pool and
// runs what is left itself.

// maxHand is the most requests a worker takes besides the one it runs next.
// Hands of 4, 8 and 32 measured the same on 16 cores; the smallest keeps the
// fewest requests waiting behind one worker.
const maxHand = 4

// fillHand takes w's share of the queue into its hand, after w took a request:
// nothing while a worker is idle or may still start (they take the queue
// first), else the queued requests over the number of workers, up to
// maxHand. mu held.
func (p *Pool) fillHand(w *worker) {
	if len(p.idle) > 0 || p.workers < p.maxWorkers {
		return
	}
	k := min(maxHand, p.queued/p.workers)
	if k == 0 {
		return
	}
	for i := range k {
		e := p.head
		p.unqueue(e)
		e.hold.Store(true)
		w.hand[i] = e
	}
	w.nhand = k
	p.inHand.Add(int64(k))
	p.hands = append(p.hands, w)
}

// dropHand empties w's hand, whose requests have all been claimed, and takes
// w off the list of hands. mu held.
func (p *Pool) dropHand(w *worker) {
	if w.nhand == 0 {
		return
	}
	clear(w.hand[:w.nhand])
	w.nhand = 0
	for i, o := range p.hands {
		if o == w {
			last := len(p.hands) - 1
			p.hands[i] = p.hands[last]
			p.hands[last] = nil
			p.hands = p.hands[:last]
			return
		}
	}
}

// claim takes e from the hand it is in, and reports whether the caller won
// it: then the caller runs or cancels it, and nobody else will. Any goroutine.
func (p *Pool) claim(e *element) bool {
	if !e.hold.CompareAndSwap(true, false) {
		return false
	}
	p.inHand.Add(-1)
	return true
}

// takeUnstarted takes e, which has not started, for the caller to cancel or
// run: off the queue, or out of the hand it is in. It reports false when e
// has started or is done. mu held, e's generation checked.
func (p *Pool) takeUnstarted(e *element) bool {
	if e.queued {
		p.unqueue(e)
		return true
	}
	return p.claim(e)
}

// steal claims the oldest request still held in a worker's hand, or returns
// nil when there is none. mu held.
func (p *Pool) steal() *element {
	for _, w := range p.hands {
		for _, e := range w.hand[:w.nhand] {
			if p.claim(e) {
				return e
			}
		}
	}
	return nil
}

// playHand runs the requests of w's hand that nobody claimed first, and
// reports whether the last one it ran woke the completion loop (wokeLoop, if
// it ran none). Worker goroutine w, without mu.
func (p *Pool) playHand(w *worker, wokeLoop bool) bool {
	for _, e := range w.hand[:w.nhand] {
		if p.claim(e) {
			wokeLoop = p.run(e, w)
		}
	}
	return wokeLoop
}

// requeueHand puts the requests of w's hand that nobody claimed back at the
// front of the queue, in their order: w is leaving (its Func called
// runtime.Goexit) before it ran them. mu held.
func (p *Pool) requeueHand(w *worker) {
	for i := w.nhand - 1; i >= 0; i-- {
		if e := w.hand[i]; p.claim(e) {
			p.enqueueFront(e)
		}
	}
	p.dropHand(w)
}

// cancelHands claims every request held in a hand and adds it to c, for
// Close to cancel. mu held.
func (p *Pool) cancelHands(c *cancelChain) {
	for e := p.steal(); e != nil; e = p.steal() {
		c.add(e)
	}
}
