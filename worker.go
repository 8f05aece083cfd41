package threadpool

import (
	"runtime/debug"
	"time"
)

// worker is one worker goroutine's wake-up state.
//
// An idle worker waits on a plain receive from wake, with no timer in the
// wait: a select over a timer channel costs a timer re-arm and a timer-heap
// update on every idle period, which dominated a lone request's round trip.
// The idle timeout is kept by a func timer instead, re-armed lazily: when it
// fires it only drops a token into wake, and the worker, finding itself
// woken without being signaled, either exits (idle since the previous token)
// or re-arms the timer. A worker that stays busy lets it fire at most once
// per idle timeout.
type worker struct {
	// wake has room for a waker's signal, a timer token and a token left
	// over from an earlier wake-up, so that a waker holding Pool.mu never
	// blocks. The worker takes one token per wake-up.
	wake     chan struct{}
	timer    *time.Timer // the idle check; armed by the worker goroutine
	signaled bool        // taken off the idle list by a waker; guarded by Pool.mu
	busy     bool        // has run a request since it last held Pool.mu; guarded by Pool.mu

	// The idle check, without reading a clock: at a timer token the worker
	// notes how many requests it has taken; at the next token, an idle
	// timeout later, the same count means it stayed idle all along.
	// Guarded by Pool.mu.
	taken       uint64 // requests taken
	takenAtTick uint64 // taken at the last token that found the worker idle
	ticked      bool   // takenAtTick is valid

	self workerSelf // the worker's identity for its Funcs' calls (caller.go)
}

// spawn starts a worker goroutine. mu held.
//
// The worker's armed timer counts in wg like the worker itself, so that
// Close waits for a timer callback that has already started.
func (p *Pool) spawn() {
	w := &worker{wake: make(chan struct{}, 3)}
	p.workers++
	p.wg.Add(2)
	w.timer = time.AfterFunc(p.idleTimeout, func() { p.tick(w) })
	go p.work(w)
}

// tick is the idle timer's callback: it tells the worker to check how long
// it has been idle. Timer goroutine.
func (p *Pool) tick(w *worker) {
	select {
	case w.wake <- struct{}{}:
	default: // the worker has a token to wake on already
	}
	p.wg.Done()
}

// armTimer makes the worker's idle check fire after d. Worker goroutine, which
// holds a count in wg, so adding to it here is safe.
func (p *Pool) armTimer(w *worker, d time.Duration) {
	if !w.timer.Reset(d) {
		p.wg.Add(1)
	}
}

// stopTimer disarms the worker's idle check for good. Worker goroutine, as it
// exits.
func (p *Pool) stopTimer(w *worker) {
	if w.timer.Stop() {
		p.wg.Done()
	}
}

// dispatch gives a newly queued request a worker: the most recently idle one,
// or a new one while fewer than max exist. mu held.
func (p *Pool) dispatch() {
	if n := len(p.idle); n > 0 {
		p.wakeIdle(n - 1)
		return
	}
	if p.workers < p.maxWorkers {
		p.spawn()
	}
}

// wakeIdle signals the idle worker at index i and takes it off the idle list.
// mu held.
func (p *Pool) wakeIdle(i int) {
	w := p.idle[i]
	last := len(p.idle) - 1
	p.idle[i] = p.idle[last]
	p.idle[last] = nil
	p.idle = p.idle[:last]
	w.signaled = true
	w.wake <- struct{}{}
}

// wakeAllIdle signals every idle worker so that it re-checks the limits and
// the closing flag. mu held.
func (p *Pool) wakeAllIdle() {
	for len(p.idle) > 0 {
		p.wakeIdle(len(p.idle) - 1)
	}
}

// work is a worker goroutine.
func (p *Pool) work(w *worker) {
	p.enterWorker(w)
	exited := false
	defer func() {
		p.stopTimer(w)
		if !exited { // the Func called runtime.Goexit: replace this worker
			p.mu.Lock()
			p.doneRunning(w)
			p.workers--
			if p.queued > len(p.idle) && p.workers < p.maxWorkers {
				p.spawn()
			}
			p.mu.Unlock()
		}
		p.leaveWorker(w)
		p.wg.Done()
	}()
	for {
		e := p.next(w)
		if e == nil {
			exited = true
			return
		}
		p.run(e)
	}
}

// next returns the next request to run, waiting while there is none, or nil
// when the worker must exit: it is above max, the pool is closing with nothing
// queued, or it stayed idle for the idle timeout while more than min workers
// were alive.
func (p *Pool) next(w *worker) *element {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.doneRunning(w)
	for {
		if p.workers > p.maxWorkers || (p.head == nil && p.closing.Load()) {
			p.workers--
			return nil
		}
		if e := p.head; e != nil {
			p.unqueue(e)
			e.state.Store(stateActive)
			w.busy = true
			w.taken++
			p.running++
			return e
		}
		p.idle = append(p.idle, w)
		if !p.waitIdle(w) {
			p.workers--
			return nil
		}
	}
}

// waitIdle waits, with mu held on entry and on return, until a waker signals
// the idle worker w, and returns true. It returns false once w has stayed
// idle for a whole idle timeout (between one and two timeouts after it went
// idle) while more than min workers are alive; w is then off the idle list.
// At min it starts over and returns true, so that the caller re-checks the
// queue and the limits.
func (p *Pool) waitIdle(w *worker) bool {
	for {
		p.mu.Unlock()
		<-w.wake
		p.mu.Lock()
		if w.signaled { // the waker took w off the idle list
			w.signaled = false
			return true
		}
		// A timer token, possibly late: w is still on the idle list.
		if !w.ticked || w.taken != w.takenAtTick {
			// Busy since the last token, or the first token of this idle
			// stretch: w may have been idle for less than the timeout.
			w.ticked, w.takenAtTick = true, w.taken
			p.armTimer(w, p.idleTimeout)
			continue
		}
		w.ticked = false
		p.removeIdle(w)
		if p.workers > p.minWorkers {
			return false
		}
		p.armTimer(w, p.idleTimeout)
		return true
	}
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

// removeIdle takes w off the idle list. mu held.
func (p *Pool) removeIdle(w *worker) {
	for i, x := range p.idle {
		if x == w {
			last := len(p.idle) - 1
			p.idle[i] = p.idle[last]
			p.idle[last] = nil
			p.idle = p.idle[:last]
			return
		}
	}
}

// run runs one request and publishes its result. A panic is recovered into a
// *PanicError; a runtime.Goexit still completes the request before the worker
// goroutine ends.
func (p *Pool) run(e *element) {
	var err error
	normal := false
	defer func() {
		if !normal {
			v := recover()
			if v == nil {
				v = ErrGoexit
			}
			err = &PanicError{Value: v, Stack: debug.Stack()}
			p.panicked.Add(1)
		}
		p.completed.Add(1)
		e.err = err
		e.state.Store(stateDone)
		p.publish(e)
	}()
	err = e.fn()
	normal = true
}
