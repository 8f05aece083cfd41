package threadpool

import "context"

// Close stops the pool at once: queued requests are canceled (their callbacks
// get ErrCanceled), running ones (those handed straight to a worker too, see
// Submit) are waited for, and every remaining callback is delivered. Submit,
// SubmitCo and SetLimits return ErrClosed from the moment Close begins; a
// Submit racing with Close either gets ErrClosed and no callback, or is
// accepted and gets exactly one callback. Close may be called more than once,
// from several goroutines at once (WithExternalLoop, one at a time: see
// below). What holds when it returns depends on the caller:
//
//   - Any other goroutine (not a Func or Callback of this pool): every
//     callback has run, every goroutine of the pool has exited and every file
//     descriptor is closed. It waits for Funcs that are still running, those
//     that called Close themselves included. WithExternalLoop, Close delivers
//     the remaining callbacks on its caller, as they come while it waits for
//     the running Funcs (one may wait for another request's callback), so
//     its caller must then be the loop goroutine, or run when the loop no
//     longer calls RunCompletions, and only one Close or Shutdown may
//     deliver at a time: like two RunCompletions at once, two would deliver
//     one batch together. A Callback delivered there that panics (without
//     WithPanicHandler) or calls runtime.Goexit unwinds Close: the pool's
//     goroutines still exit once its Funcs have returned, and the
//     descriptor, with any callback still due, waits for the loop's next
//     RunCompletions or Close.
//   - A Callback: Close cannot wait for the loop it runs on. It delivers the
//     remaining callbacks nested (on the loop, as always), as they come while
//     it waits for the running Funcs (one may wait for another request's
//     callback), runs every Flush deferred so far in the batch (DeferCall),
//     the calling Callback's own included, instead of leaving them to the end
//     of the batch, and returns; the completion goroutine exits once that
//     Callback returns. It runs those Flushes before each wait for a
//     running Func too, as a Func may wait for one (a reply a Flush sends),
//     so a Flusher that callbacks defer again meanwhile may run more than
//     once in the batch. What the Callback defers after Close is flushed at
//     the end of the batch, as usual. A Close called from a Flush, on the
//     loop, also runs the Flushes of its batch deferred after that one
//     first, as a Func it waits for may wait for them. A Callback that a
//     worker delivers as the loop (a lone request's: see the package
//     documentation) is one too: its Close waits until the other workers
//     have left the pool's count, instead of their goroutines, and that
//     worker exits once the batch is over.
//   - A Func, on the worker that runs it: Close cannot wait for that worker.
//     It cancels what is queued, waits until every other Func has returned
//     and its worker has left the pool's count, taking no more requests
//     (bar Funcs that are themselves in Close or Shutdown; the goroutine
//     itself may still be on its way out), and returns. It delivers
//     nothing and waits for no callback: they run on the loop as usual,
//     the calling Func's own once it returns. A Func that waits for the
//     calling one meanwhile (a Func whose SubmitCo runs, on another
//     worker, the fn that calls Close, say) is among those Funcs: the two
//     wait for each other for ever.
//     The calling worker and the completion goroutine exit, and the pool's own
//     descriptor closes, after that; a Close from any other goroutine waits
//     for it. WithExternalLoop, the loop delivers the rest through
//     RunCompletions or its own Close, which releases the descriptor.
//
// Close returns nil, except WithExternalLoop, where the Close that releases
// Fd returns the error of closing it, if any.
func (p *Pool) Close() error {
	w, onLoop := p.caller()
	return p.close(w, onLoop)
}

// close is Close called on worker w (from a Func), on the completion loop
// (from a Callback: onLoop, on worker w if it delivers) or, with neither,
// from any other goroutine.
func (p *Pool) close(w *worker, onLoop bool) error {
	p.beginClose(true)
	if w != nil && !onLoop {
		return p.waitOthers(context.Background(), w)
	}
	if p.external || onLoop {
		return p.closeOnLoop(w)
	}
	p.wg.Wait()
	p.stopReaper()
	p.stopLoop.Store(true)
	p.wakeLoop()
	<-p.loopDone
	return nil
}

// closeOnLoop is Close on the goroutine that delivers completions: the
// pool's own, from a Callback (on worker w, if it delivers in the completion
// goroutine's place, else nil), or WithExternalLoop the loop's. It delivers
// the callbacks as they come while the running Funcs finish, since one of
// them may wait for a callback that only this goroutine can run, then waits
// for the workers, delivers what is left and runs what the batch deferred
// so far. Loop goroutine only.
func (p *Pool) closeOnLoop(w *worker) error {
	// Should a Callback delivered here call runtime.Goexit, the loop that
	// restarts must go on delivering while Funcs still run, and exit once the
	// last worker has left (stopWhenGone): so no stop before the workers.
	_ = p.deliverUntilQuiet(context.Background()) // no ctx to end: nil
	if w != nil {
		// A worker delivers as the loop: it cannot wait for its own
		// goroutine, and exits once the Callback returns.
		p.waitWorkersGone()
	} else {
		p.wg.Wait()
	}
	if !p.external {
		// Before the last drain and the Flushes, which may still call
		// runtime.Goexit: the loop that restarts must then exit.
		p.stopLoop.Store(true)
	}
	p.stopReaper()
	p.drain()
	p.flushNested()
	if p.external {
		return p.notifier.Close()
	}
	return nil
}

// Shutdown stops the pool gracefully: Submit, SubmitCo and SetLimits return
// ErrClosed from the moment it begins, but queued requests still run. It
// returns nil (WithExternalLoop, the error of releasing Fd, if any) once
// every callback has run and every goroutine and descriptor of the pool is
// released, as after Close.
//
// Shutdown is bounded by ctx, like net/http's Server.Shutdown: if ctx ends
// first, Shutdown cancels what is still queued (those callbacks get
// ErrCanceled) and returns ctx's error at once, without waiting for the Funcs
// that are running. They finish in the background and their callbacks are
// still delivered, once each: on the pool's own completion goroutine, which
// then exits by itself, or, WithExternalLoop, through RunCompletions or a
// later Close. A later Close waits for them and releases everything.
//
// Like Close, Shutdown may be called more than once and concurrently with
// Submit. From a Callback, or WithExternalLoop, it runs the completion loop on
// its caller until the work is done, or ctx ends (the rules of Close about the
// caller apply). From a Func it waits, on the calling worker, until the queue
// is empty and every other Func has returned (bar Funcs that are themselves
// in Close or Shutdown), and returns nil; it delivers nothing and waits for no
// callback, like a Close from a Func. While no other worker is free to take a
// queued request, the calling worker runs it itself, checking ctx between
// requests only; a request run so that calls runtime.Goexit ends the calling
// Func too, whose callback then gets a *PanicError of ErrGoexit.
func (p *Pool) Shutdown(ctx context.Context) error {
	w, onLoop := p.caller()
	p.beginClose(false)
	var err error
	switch {
	case w != nil && !onLoop:
		err = p.waitOthers(ctx, w)
	case p.external || onLoop:
		if err = p.deliverUntilQuiet(ctx); err != nil {
			p.beginClose(true)
			p.stopWhenGone()
			p.drain() // deliver the canceled requests on the loop, as Close does
			p.flushNested()
			return err
		}
	default:
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
	if err != nil {
		p.beginClose(true)
		p.stopWhenGone() // no worker may be left to do it as it leaves
		return err
	}
	return p.close(w, onLoop)
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
	var canceled cancelChain
	if cancel {
		for e := p.head; e != nil; e = p.head {
			p.unqueue(e)
			canceled.add(e)
		}
		p.cancelHands(&canceled)
	}
	p.mu.Unlock()
	for e := canceled.first; e != nil; {
		next := e.next
		e.next = nil
		p.canceled.Add(1)
		p.publish(e, nil)
		e = next
	}
	if p.pending.Load() == 0 {
		p.signalQuiet()
	}
}

// cancelChain links the requests Close cancels, oldest first, by next.
type cancelChain struct{ first, last *element }

// add sets e's result to ErrCanceled and links it at the end.
func (c *cancelChain) add(e *element) {
	e.err = ErrCanceled
	if c.last != nil {
		c.last.next = e
	} else {
		c.first = e
	}
	c.last = e
}

// deliverUntilQuiet is runUntilQuiet for a Close or Shutdown on the loop. A
// Callback it delivers that calls runtime.Goexit (or panics) unwinds that
// Close or Shutdown: the pool must still release itself once its workers
// are gone, and none may be left to do it as it leaves. Loop goroutine only.
func (p *Pool) deliverUntilQuiet(ctx context.Context) error {
	returned := false
	defer func() {
		if !returned {
			p.stopWhenGone()
		}
	}()
	err := p.runUntilQuiet(ctx)
	returned = true
	return err
}

// runUntilQuiet runs the completion loop on the caller until every accepted
// request is over or ctx ends, and, nested in a batch, the Flushes the batch
// deferred so far before each wait. Loop goroutine only.
//
// A drain goes on for as long as completions keep coming, and ctx is looked
// at only between drains: so ctx's end cancels what is queued at once, from
// ctx's goroutine, and runUntilQuiet then returns ctx's error even when the
// canceled requests were the last ones it waited for. With nothing left
// to deliver it returns nil at once, whether or not ctx has ended.
func (p *Pool) runUntilQuiet(ctx context.Context) (err error) {
	if p.pending.Load() == 0 {
		return nil
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		p.beginClose(true)
		close(fired)
	})
	defer func() {
		if !stop() {
			<-fired
			err = ctx.Err()
		}
	}()
	failures := 0
	for p.pending.Load() > 0 {
		if p.batch == nil && p.done.Load() == nil {
			// Nested in a batch (called from a Callback): run what the
			// batch deferred so far before waiting, as a running Func may
			// wait for a Flush (a reply it sends) as for a callback.
			p.flushNested()
			if p.pending.Load() == 0 {
				// A Flush ended the last Func's wait and called Close,
				// which delivered the rest (and, WithExternalLoop,
				// closed the descriptor the wait would read).
				break
			}
			if err := p.waitWake(ctx); err != nil {
				if err := ctx.Err(); err != nil {
					return err
				}
				// A read error: deliver what is done and poll, like the
				// pool's own loop.
				failures++
				if err := p.waitFailed(ctx, failures); err != nil {
					return err
				}
			} else {
				failures = 0
			}
		}
		p.drain()
	}
	return nil
}
