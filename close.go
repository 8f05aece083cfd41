package threadpool

import "context"

// Close stops the pool at once: queued requests are canceled (their callbacks
// get ErrCanceled), running ones are waited for, every remaining callback is
// delivered, every goroutine of the pool has exited and every file descriptor
// is closed when it returns. Submit, SubmitCo and SetLimits return ErrClosed
// from the moment Close begins; a Submit racing with Close either gets
// ErrClosed and no callback, or is accepted and gets exactly one callback.
//
// Close may be called more than once; every call returns once the pool is
// closed. With the pool's own completion goroutine, calls may come from
// several goroutines at once; WithExternalLoop, every call must come from the
// loop goroutine (see below), because Close delivers on its caller.
//
// With its own completion goroutine, the remaining callbacks run there. Called
// from a Callback, Close cannot wait for the goroutine it runs on: it cancels,
// waits for the running Funcs, delivers the remaining callbacks nested, and
// returns; the completion goroutine exits as soon as that Callback returns.
// WithExternalLoop, the remaining callbacks run on the caller of Close, which
// must be the loop goroutine (a Callback included) or run when the loop no
// longer calls RunCompletions.
func (p *Pool) Close() error {
	p.beginClose(true)
	p.wg.Wait()
	p.stopReaper()
	switch {
	case p.external:
		p.drain()
		return p.notifier.Close()
	case p.onLoop():
		p.drain()
		p.stopLoop.Store(true)
		return nil
	default:
		p.stopLoop.Store(true)
		p.wakeLoop()
		<-p.loopDone
		return nil
	}
}

// Shutdown stops the pool gracefully: Submit returns ErrClosed from the moment
// it begins, but queued requests still run. It returns nil once every callback
// has run and every goroutine and descriptor of the pool is released. If ctx
// ends first, Shutdown falls back to Close (canceling what is still queued and
// delivering every callback) and returns ctx's error.
//
// Like Close, Shutdown may be called more than once and concurrently with
// Submit. From a Callback, or WithExternalLoop, it runs the completion loop on
// its caller until the work is done (the same rules as Close apply).
func (p *Pool) Shutdown(ctx context.Context) error {
	p.beginClose(false)
	var err error
	if p.external || p.onLoop() {
		err = p.runUntilQuiet(ctx)
	} else {
		select {
		case <-p.quiet:
		case <-ctx.Done():
			select {
			case <-p.quiet:
			default:
				err = ctx.Err()
			}
		}
	}
	p.Close()
	return err
}

// beginClose refuses new requests, wakes idle workers so that they exit once
// the queue is empty, and with cancel set cancels everything still queued.
func (p *Pool) beginClose(cancel bool) {
	p.cancelMu.Lock()
	defer p.cancelMu.Unlock()
	p.mu.Lock()
	if !p.closing.Load() {
		p.closing.Store(true)
		p.wakeAllIdle()
	}
	var first, last *element // canceled requests, oldest first, linked by next
	if cancel {
		for e := p.head; e != nil; e = p.head {
			p.unqueue(e)
			e.err = ErrCanceled
			if last != nil {
				last.next = e
			} else {
				first = e
			}
			last = e
		}
	}
	p.mu.Unlock()
	for e := first; e != nil; {
		next := e.next
		e.next = nil
		p.canceled.Add(1)
		p.publish(e)
		e = next
	}
	if p.pending.Load() == 0 {
		p.signalQuiet()
	}
}

// runUntilQuiet runs the completion loop on the caller until every accepted
// request is over or ctx ends. Loop goroutine only.
func (p *Pool) runUntilQuiet(ctx context.Context) error {
	for p.pending.Load() > 0 {
		if p.batch == nil && p.done.Load() == nil {
			if err := p.waitWake(ctx); err != nil {
				return err
			}
		}
		p.drain()
	}
	return nil
}

// onLoop reports whether the caller is the pool's own completion goroutine,
// that is, a Callback.
func (p *Pool) onLoop() bool {
	return !p.external && p.loopGoid.Load() == curGoroutineID()
}
