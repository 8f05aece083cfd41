package threadpool

import (
	"runtime/debug"
	"time"
)

// worker is one worker goroutine's wake-up state.
type worker struct {
	wake     chan struct{} // cap 1; a token means the worker was signaled
	timer    *time.Timer   // idle timeout; worker goroutine only
	signaled bool          // taken off the idle list by a waker; guarded by Pool.mu
}

// spawn starts a worker goroutine. mu held.
func (p *Pool) spawn() {
	w := &worker{wake: make(chan struct{}, 1), timer: time.NewTimer(time.Hour)}
	w.timer.Stop()
	p.workers++
	p.wg.Add(1)
	go p.work(w)
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
	exited := false
	defer func() {
		if !exited { // the Func called runtime.Goexit: replace this worker
			p.mu.Lock()
			p.workers--
			if p.queued > len(p.idle) && p.workers < p.maxWorkers {
				p.spawn()
			}
			p.mu.Unlock()
		}
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
	for {
		if p.workers > p.maxWorkers || (p.head == nil && p.closing.Load()) {
			p.workers--
			return nil
		}
		if e := p.head; e != nil {
			p.unqueue(e)
			e.state.Store(stateActive)
			p.running.Add(1)
			return e
		}
		p.idle = append(p.idle, w)
		p.mu.Unlock()
		w.timer.Reset(p.idleTimeout)
		timedOut := false
		select {
		case <-w.wake:
			w.timer.Stop()
		case <-w.timer.C:
			timedOut = true
		}
		p.mu.Lock()
		if w.signaled {
			w.signaled = false
			if timedOut {
				<-w.wake // sent under mu before we took it: never blocks
			}
			continue
		}
		// Timed out and nobody signaled us: we are still on the idle list.
		for i, x := range p.idle {
			if x == w {
				last := len(p.idle) - 1
				p.idle[i] = p.idle[last]
				p.idle[last] = nil
				p.idle = p.idle[:last]
				break
			}
		}
		if p.workers > p.minWorkers {
			p.workers--
			return nil
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
		p.running.Add(-1)
		p.completed.Add(1)
		e.err = err
		e.state.Store(stateDone)
		p.publish(e)
	}()
	err = e.fn()
	normal = true
}
