package threadpool

import (
	"runtime/debug"
	"sync/atomic"
)

// worker is one worker goroutine's wake-up state.
//
// An idle worker waits on a plain receive from wake, with no timer anywhere:
// the idle timeout is kept by the pool's reaper (reaper.go), which tells a
// worker idle for a whole timeout to exit through the same channel.
type worker struct {
	// wake carries the one signal an idle worker gets: whoever takes it off
	// the idle list (a submitter, Close, SetLimits or the reaper) sends it,
	// under Pool.mu, and never more than once per idle stretch.
	wake chan struct{}

	// Guarded by Pool.mu.
	transit  bool // counted in Pool.transit
	starting bool // counted in Pool.starting
	busy     bool // has run a request since it last held Pool.mu
	// retired: told to exit while idle, by the reaper or by SetLimits above
	// max, which uncounted it already
	retired bool

	// The idle check, without reading a clock: at each pass the reaper
	// notes how many requests an idle worker has taken; at the next pass, an
	// idle timeout later, the same count means it stayed idle all along.
	// Guarded by Pool.mu.
	taken       uint64 // requests taken
	takenAtPass uint64 // taken at the reaper's last pass that found it idle

	self workerSelf // the worker's identity for its Funcs' calls (caller.go)

	// hand holds the requests the worker runs after its current one
	// (hand.go): written under Pool.mu by the worker itself, read by it
	// without mu and by others under mu.
	hand  [maxHand]*element
	nhand int

	// kick ends the worker's spin (spin.go): set, under Pool.mu, by whoever
	// takes it off Pool.spinner; read by the spinning worker without mu.
	kick atomic.Bool

	// direct is a request handed straight to the idle worker (Pool.handOff):
	// written under Pool.mu by the submitter that takes the worker off the
	// idle list, before it sends the wake-up; read and cleared by the worker
	// after it received the wake-up, without mu.
	direct *element

	// Delivery in place of the completion loop (delivery.go); worker
	// goroutine only. deliver: its last request was published without
	// waking the loop, for it to deliver. delivering: it holds
	// Pool.delivering, as the loop. rejoin: it left Pool.workers to deliver
	// and counts again when it next takes mu.
	deliver    bool
	delivering bool
	rejoin     bool
}

// spawn starts a worker goroutine, counted in transit when it is started for
// queued work, else in starting. mu held.
func (p *Pool) spawn(transit bool) {
	w := &worker{wake: make(chan struct{}, 1), transit: transit, starting: !transit, takenAtPass: ^uint64(0)}
	if transit {
		p.transit++
	} else {
		p.starting++
	}
	p.workers++
	p.wg.Add(1)
	go p.work(w)
}

// maxTransit is the most workers in transit at once (see dispatch), on any
// number of processors. Each woken worker takes the pool's mutex to take its
// request, so many of them at once take turns at it: on 16 cores, one job
// at iodepth 64 (about 9 requests a batch) did 0.65M reads a second with up
// to 16 workers in transit, 0.72M with 4 and 0.77M with 2, on fewer cores;
// eight jobs at iodepth 64 did 1.21M, 1.25M and 1.17M, and eight at
// iodepth 1 0.30M, 0.30M and 0.29M (three alternated rounds each,
// cmd/tpbench/README.md). Four keeps most of the gain and loses nothing.
// It holds on fewer processors too, where it was one per processor: on 2
// CPUs, whose kernel packs threads onto busy CPUs, one job at iodepth 64
// did 1.33x, 1.08x, 1.00x and 0.97x the reads with 4 as with 2 in four
// alternated comparisons (it ran on one CPU's worth of time in 36% of the
// runs with 4, 55% with 2), and the other benchmarks stayed within the
// noise.
const maxTransit = 4

// dispatch makes sure that queued work has workers on their way to it: when
// more requests are queued than workers are in transit, it wakes the most
// recently idle worker, or starts one while fewer than max exist. At most
// maxTransit workers are in transit at once; each one that finds work wakes
// the next while requests remain queued, so a burst of submissions wakes
// workers as fast as they start running, not one wake-up per request. mu
// held.
func (p *Pool) dispatch() {
	if p.queued > 0 {
		p.kickSpinner()
	}
	for p.unstarted() > p.transit && p.transit < maxTransit {
		if w := p.popIdle(); w != nil {
			w.transit = true
			p.transit++
			w.wake <- struct{}{}
		} else if p.workers < p.maxWorkers {
			p.spawn(true)
		} else {
			return
		}
	}
}

// popIdle takes the most recently idle worker off the idle list, or returns
// nil when none is idle. mu held.
func (p *Pool) popIdle() *worker {
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	w := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	return w
}

// handOff gives e, just accepted, straight to the most recently idle worker
// when the pool has nothing else in progress: no request running, waiting to
// start or with a worker on its way (a spinner counts as one), so that e
// overtakes nothing, and at depth the workers go on taking requests from the
// queue. The worker runs e as soon as it wakes, without taking mu again to
// find it. From here on e counts as running (Stats.Running), and Cancel and
// Close leave it to run, as they do a request that has started. It reports
// whether it handed e over. No idle worker is above max: SetLimits retires
// those (retireIdleAboveMax). mu held.
func (p *Pool) handOff(e *element) bool {
	if p.running > 0 || p.transit > 0 || p.unstarted() > 0 {
		return false
	}
	w := p.popIdle()
	if w == nil {
		return false
	}
	w.direct = e
	p.take(w)
	w.wake <- struct{}{}
	return true
}

// unstarted returns how many accepted requests wait to start: queued, or in
// a worker's hand, where another worker may take them too (hand.go). mu held.
func (p *Pool) unstarted() int {
	if len(p.hands) == 0 { // no hand holds any: skip the shared counter
		return p.queued
	}
	return p.queued + int(p.inHand.Load())
}

// waiting returns how many queued requests would have no worker to take
// them if n more were queued: the queued ones (those in workers' hands too,
// which another worker may yet take) beyond the takers. WithMaxQueued
// bounds it. mu held.
func (p *Pool) waiting(n int) int {
	return p.unstarted() + n - p.takers()
}

// takers returns how many workers will take a queued request without one
// finishing first: the workers in transit, those started for min that have
// not yet looked at the queue, the idle workers and the workers that may
// still start (none while SetLimits has left more workers than max), less
// the workers that will exit first. Above max, the workers that come back
// for work first exit, until the pool is down to max, and the count takes
// the worst case, that those in transit or starting are among them. Idle
// workers are never among them: SetLimits retires as many as the pool has
// above max (retireIdleAboveMax), or all of them, and no worker goes idle
// while the pool is above max. mu held.
func (p *Pool) takers() int {
	k := p.transit + p.starting + len(p.idle) + max(0, p.maxWorkers-p.workers)
	return max(0, k-max(0, p.workers-p.maxWorkers))
}

// arrive ends w's transit, if it was in transit, and reports whether it was;
// a worker just started for min arrives too, uncounted in starting. mu held.
func (p *Pool) arrive(w *worker) bool {
	if w.starting {
		w.starting = false
		p.starting--
	}
	if !w.transit {
		return false
	}
	w.transit = false
	p.transit--
	return true
}

// retireIdleAboveMax retires as many idle workers as the pool has above max,
// the longest idle first: like the reaper, it uncounts each one and wakes it
// to exit. The others stay on the idle list, where Submit finds them and
// WithMaxQueued counts them (waking them all to re-check the limits took
// them off it before any of them ran). mu held.
func (p *Pool) retireIdleAboveMax() {
	k := min(len(p.idle), p.workers-p.maxWorkers)
	if k <= 0 {
		return
	}
	for _, w := range p.idle[:k] {
		w.retired = true
		p.workers--
		w.wake <- struct{}{}
	}
	n := copy(p.idle, p.idle[k:])
	clear(p.idle[n:])
	p.idle = p.idle[:n]
}

// wakeAllIdle signals every idle worker so that it sees that the pool is
// closing. mu held.
func (p *Pool) wakeAllIdle() {
	p.kickSpinner()
	for i, w := range p.idle {
		p.idle[i] = nil
		w.wake <- struct{}{}
	}
	p.idle = p.idle[:0]
}

// work is a worker goroutine.
func (p *Pool) work(w *worker) {
	p.enterWorker(w)
	exited := false
	defer func() {
		if !exited { // a Func or a Callback called runtime.Goexit: replace this worker
			if w.delivering {
				p.endDelivery(w)
			}
			p.mu.Lock()
			p.rejoinWorkers(w)
			p.doneRunning(w)
			p.requeueHand(w)
			p.arrive(w)
			p.workers--
			if p.live() < p.minWorkers && !p.closing.Load() {
				p.spawn(false)
			}
			p.dispatch()
			p.mu.Unlock()
		}
		p.leaveWorker(w)
		p.wg.Done()
	}()
	wokeLoop := true
	for {
		e := p.next(w, !wokeLoop)
		if e == nil {
			exited = true
			return
		}
		wokeLoop = p.playHand(w, p.run(e, w))
		if w.deliver {
			p.deliverHere(w)
			wokeLoop = true // the loop's work done here: no spin either
		}
	}
}

// next returns the next request to run, waiting while there is none, or nil
// when the worker must exit: it is above max, the pool is closing with nothing
// queued, or the reaper retired it. It takes the oldest request not started:
// one from another worker's hand (hand.go), whose requests were queued before
// the queue's, or else the queue's oldest (and, the queue long, a hand of the
// next ones), before it spins, parks or exits. maySpin allows
// it to spin before it parks (spin.go): its last request did not wake the
// completion loop. A parked worker woken by handOff returns the request it
// was handed at once, without mu: the request was accepted before any
// Close began, and an idle worker is neither above max nor retired; the
// next call looks at those again.
func (p *Pool) next(w *worker, maySpin bool) *element {
	p.mu.Lock()
	p.rejoinWorkers(w)
	p.doneRunning(w)
	p.dropHand(w)
	spun := false // the last pass spun: a request taken now is a spin hit
	for {
		chain := p.arrive(w)
		if p.workers > p.maxWorkers {
			p.quit()
			return nil
		}
		// What waits in the hands was queued before what is queued now:
		// oldest first, so that a Func waiting for an earlier request
		// never waits behind later ones.
		e := p.steal()
		if e != nil {
			p.take(w)
		} else if e = p.head; e != nil {
			p.unqueue(e)
			p.take(w)
			p.fillHand(w)
		} else if p.closing.Load() {
			p.quit()
			return nil
		}
		if e != nil {
			if spun {
				p.spinHits++
			}
			if chain {
				p.dispatch()
			}
			p.mu.Unlock()
			return e
		}
		if maySpin && p.shouldSpin() {
			maySpin = false // once per wait
			p.spin(w)
			spun = true
			continue
		}
		spun = false
		p.idle = append(p.idle, w)
		p.mu.Unlock()
		<-w.wake
		if e := w.direct; e != nil { // handed over by handOff, counted taken
			w.direct = nil
			return e
		}
		p.mu.Lock()
		if w.retired {
			p.mu.Unlock()
			return nil
		}
	}
}

// quit uncounts a worker that exits, passes its transit on to another
// worker and releases mu. mu held.
func (p *Pool) quit() {
	p.workers--
	p.dispatch()
	p.mu.Unlock()
}

// take records that w runs a request, which has left the queue or never
// joined it.
// mu held.
func (p *Pool) take(w *worker) {
	w.busy = true
	w.taken++
	p.running++
}

// doneRunning stops counting w's last request as running: the worker counts
// it until it next takes mu, which saves two atomic operations a request.
// mu held.
func (p *Pool) doneRunning(w *worker) {
	if w.busy {
		w.busy = false
		p.running--
	}
}

// run runs one request and publishes its result, and reports whether the
// publication woke the completion loop. A panic is recovered into a
// *PanicError; a runtime.Goexit still completes the request before the worker
// goroutine ends.
func (p *Pool) run(e *element, w *worker) (wokeLoop bool) {
	var err error
	normal := false
	defer func() {
		if !normal {
			v := recover()
			if v == nil {
				v = ErrGoexit
			}
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
		p.completed.Add(1)
		if !normal { // counted after Completed, which Stats reads after it
			p.panicked.Add(1)
			w = nil // perhaps a Goexit: the worker may not get to deliver it
		}
		e.err = err
		wokeLoop = p.publish(e, w)
	}()
	err = e.fn()
	normal = true
	return
}
