package threadpool

import "fmt"

// A Batch collects requests and submits them together, like QEMU's
// blk_io_plug/unplug: Flush queues every recorded request under one lock
// and wakes only as many workers as can start at once, instead of one lock
// and one wake-up per request. A goroutine that submits a burst (a reader
// that parsed several requests from one socket read, a job resubmitting
// its completions) records them with Add and calls Flush before it blocks.
//
// A Batch belongs to one goroutine at a time: it has no lock. It is reused
// after Flush, without allocating in the steady state. Make one with
// Pool.NewBatch.
type Batch struct {
	p    *Pool
	reqs []batchReq // recorded, not yet submitted; oldest first
}

type batchReq struct {
	fn Func
	cb Callback
}

// NewBatch returns an empty Batch that submits to p. Any goroutine, before
// or after Close: a Batch of a closed pool records requests, and its Flush
// returns ErrClosed.
func (p *Pool) NewBatch() *Batch { return &Batch{p: p} }

// Add records a request for the next Flush. It returns ErrNilFunc for a nil
// fn, and records nothing then. Nothing is submitted, and no error of the
// pool is reported, before Flush. The goroutine that holds the Batch only.
func (b *Batch) Add(fn Func, cb Callback) error {
	if fn == nil {
		return ErrNilFunc
	}
	b.reqs = append(b.reqs, batchReq{fn, cb})
	return nil
}

// Len returns how many requests are recorded and not yet flushed. The
// goroutine that holds the Batch only.
func (b *Batch) Len() int { return len(b.reqs) }

// Flush submits every recorded request, in order, and empties the Batch.
// Either all of them are accepted (each callback then runs exactly once, as
// for Submit) or none is: Flush returns ErrClosed once Shutdown or Close
// began, and ErrQueueFull when the requests that would wait for a worker
// exceed the WithMaxQueued bound; then no callback of the batch runs. A
// batch larger than the pool's maximum workers and WithMaxQueued bound
// together would be refused even by an idle pool: its error wraps
// ErrQueueFull and says so; splitting it (or raising the limits) helps, a
// retry does not. The Batch is empty
// afterwards either way. Flush of an empty Batch returns nil.
//
// As Submit, Flush never runs a callback itself and never waits for a
// worker, and the same holds from whichever goroutine holds the Batch: a
// Callback (the callbacks run later on the loop, never nested in the calling
// one), a Func (the requests queue behind the others; the Func does not wait
// for them) or any other goroutine.
func (b *Batch) Flush() error {
	if len(b.reqs) == 0 {
		return nil
	}
	err := b.p.acceptBatch(b.reqs)
	clear(b.reqs)
	b.reqs = b.reqs[:0]
	return err
}

// acceptBatch queues reqs under one lock and dispatches workers for them;
// the first goes straight to an idle worker when the pool was idle
// (handOff).
func (p *Pool) acceptBatch(reqs []batchReq) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing.Load() {
		return ErrClosed
	}
	if p.maxQueued > 0 && p.waiting(len(reqs)) > p.maxQueued {
		if len(reqs) > p.maxQueued+p.maxWorkers {
			// Even an idle pool would refuse it at these limits: retrying
			// cannot help, splitting it or raising the limits can.
			return fmt.Errorf("%w: a batch of %d requests never fits in %d workers and %d queued (WithMaxQueued): split it or raise the limits",
				ErrQueueFull, len(reqs), p.maxWorkers, p.maxQueued)
		}
		return ErrQueueFull
	}
	// Counted before the first request can run: handOff wakes its worker.
	p.pending.Add(int64(len(reqs)))
	p.submitted += uint64(len(reqs))
	for i, r := range reqs {
		e := p.alloc()
		e.fn, e.cb = r.fn, r.cb
		if i > 0 || !p.handOff(e) {
			p.enqueue(e)
		}
	}
	p.dispatch()
	return nil
}
