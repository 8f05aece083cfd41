// Package threadpool runs blocking work (file I/O above all) on a pool of
// worker goroutines and delivers the completions to one event loop, in
// batches.
//
// It is modelled on QEMU's block-layer thread pool. Workers run each Func;
// every Callback then runs on the pool's completion loop, one at a time,
// never inside a Func and never inside Submit. Each wake-up of the loop drains
// every finished request inside one Deferrer region, so that callbacks can
// DeferCall a notification (an eventfd write, a socket flush) and have it
// happen once per batch instead of once per completion. Workers wake the loop
// at most once per batch, too: a burst of completions costs one wake-up.
// Between two bursts, a worker that runs out of work spins for a few tens
// of microseconds, so that the next burst finds a processor awake
// (WithSpin); lone requests and an idle pool never make a worker spin. When
// every worker is busy and more requests wait than there are workers, a
// worker takes its share of the queue at once, so that many processors do
// not take turns at the pool's lock for every request; those requests have
// not started, and Cancel and Close still find them.
//
// By default the pool runs its own completion goroutine. The callback of a
// lone request, the only one accepted and not over when its Func returns, is
// delivered instead by the worker that ran it, acting as the loop for that
// batch: no goroutine is woken, which takes about a third off a round trip
// at depth 1. While it delivers, that worker runs no Func and is not counted as
// a worker, so a Callback may still wait for a Func. WithExternalLoop hands
// the loop to the caller instead: wait until Fd is readable, then call
// RunCompletions.
package threadpool

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Func is blocking work. It runs on a worker goroutine; its error is handed to
// the request's Callback. A panic in a Func is recovered and delivered as a
// *PanicError. A Func may call Submit, SubmitCo, Batch.Add and Batch.Flush,
// Cancel, SetLimits, Stats, Close and Shutdown of its own pool (each method's
// documentation says what holds then), but not DeferCall or RunCompletions,
// which belong to the completion loop.
type Func func() error

// Callback receives the result of a request. It runs on the pool's
// completion loop (the pool's goroutine or, for a lone request, the worker
// that ran it, acting as the loop: see the package documentation; or the
// caller of RunCompletions with WithExternalLoop), one callback at a time,
// after the Func has returned or the request was canceled: what one
// Callback wrote, the next one reads without a lock. It may call every
// method of the pool: Submit, Cancel, SubmitCo, SetLimits and DeferCall,
// Close and Shutdown (which deliver the remaining callbacks nested), and,
// WithExternalLoop, RunCompletions. It should not block for long: every
// other completion waits behind it.
type Callback func(err error)

// Pool is a pool of worker goroutines whose completions come back to one
// event loop. Make one with New; the zero Pool is not usable. All methods are
// safe for concurrent use unless their documentation says otherwise.
type Pool struct {
	// Written once in New, read-only afterwards.
	external     bool
	panicHandler func(v any) // a panicking Callback's or Flush's value goes here (loopPanicHandler)
	maxQueued    int
	idleTimeout  time.Duration
	notifier     *Notifier     // the loop's eventfd; nil with the channel wake-up
	wakeCh       chan struct{} // the loop's channel wake-up, one slot: full while one is pending; nil with the notifier
	spinFor      time.Duration // longest spin of a worker; 0: none (spin.go)
	spinTurn     time.Duration // longest turn of a spin before it ends (spin.go)

	mu sync.Mutex
	// Guarded by mu.
	head, tail *element // pending queue, oldest first
	queued     int      // elements on the pending queue
	free       *element // recycled elements, ready for alloc
	// recycled is a chain of elements handed back without mu (linked by
	// next); alloc takes it whole when free runs out. nrecycled counts it.
	recycled   atomic.Pointer[element]
	nrecycled  atomic.Int64
	minWorkers int
	maxWorkers int
	workers    int // live worker goroutines, bar those delivering as the loop
	// lent counts the workers delivering as the loop, left out of workers
	// until they come back (delivery.go): one at most delivers, but the one
	// before may not have come back yet.
	lent    int
	idle    []*worker // idle workers, most recently idle last
	spinner *worker   // the worker spinning for work, if any (spin.go)
	hands   []*worker // the workers whose hand is not empty (hand.go)
	running int       // requests taken by workers and not yet counted done
	// transit counts workers woken or started for queued work that have not
	// yet looked at the queue: each will take a request if one is left,
	// unless it finds the pool above max and exits (see takers).
	transit int
	// starting counts the workers started for min, not for queued work,
	// that have not yet looked at the queue: like those in transit, each
	// will take a request if one is left.
	starting  int
	submitted uint64 // requests accepted
	spins     uint64 // spins begun (spin.go)
	spinHits  uint64 // spins after which the spinner took a request
	// funcClosers counts the workers whose Func is in Close or Shutdown, and
	// waiters, when not nil, is closed to wake them (caller.go).
	funcClosers int
	waiters     chan struct{}

	// workerIDs maps the goroutine id of each live worker to its *worker,
	// so that Close, Shutdown and SubmitCo can tell that a Func calls them.
	workerIDs sync.Map
	// left is closed, and replaced, each time a worker exits: it wakes the
	// SubmitCo callers, which may be Funcs left without a worker (caller.go).
	left atomic.Pointer[chan struct{}]

	// closing is set, under mu, when Shutdown or Close begins; read anywhere.
	closing atomic.Bool
	// inHand counts the requests in workers' hands that nobody has claimed
	// yet (hand.go). Incremented under mu, decremented by any claimant.
	inHand atomic.Int64
	// pending counts accepted requests whose callback has not started (or
	// whose SubmitCo work has not finished). Incremented under mu.
	pending   atomic.Int64
	quiet     chan struct{} // closed once closing and pending reached 0
	quietOnce sync.Once

	wg sync.WaitGroup // worker goroutines

	// The reaper (reaper.go); set in New.
	reaperR    *os.File      // the read end of its pipe, which it polls
	reaperW    *os.File      // the write end, closed by Close to stop it
	reaperFd   int           // reaperR's descriptor number
	reaperFile [2]uint64     // the file reaperFd named in New (fileID)
	reaperQuit chan struct{} // closed by Close to stop it
	reaperDone chan struct{} // closed when it has exited
	reaperOnce sync.Once     // the first Close stops it

	// cancelMu orders cancellations before the end of the loop: Cancel holds
	// it for reading while it publishes a canceled request, beginClose holds
	// it for writing, so once any Close is past beginClose no canceled request
	// is still on its way to the loop.
	cancelMu sync.RWMutex

	// done is the stack of finished requests, newest first; pushed by any
	// goroutine, taken whole by the loop.
	done atomic.Pointer[element]

	// Loop goroutine only (the caller of RunCompletions with an external loop).
	deferrer         Deferrer
	batch            *element // taken from done, not yet delivered
	spent, spentTail *element // delivered, recycled when the outermost drain ends
	drainDepth       int      // nested drains in progress

	loopGoid atomic.Uint64 // the completion goroutine's id; 0 with an external loop

	// Delivery by a worker (delivery.go). delivering is held, true, by
	// whoever owns the loop's batch state above: the completion goroutine,
	// or a worker delivering in its place. resume wakes the
	// completion goroutine parked until a worker lets go: one buffered
	// token, sent by every worker that lets go. It is made in New, only
	// when workers may deliver (workersDeliver), and never changes.
	delivering atomic.Bool
	resume     chan struct{}
	// drainOwner is the goroutine delivering completions, 0 when none; kept
	// in race builds only, to catch deliveries and DeferCalls off the loop.
	drainOwner atomic.Uint64
	stopLoop   atomic.Bool   // set by Close once no more completions can appear
	loopDone   chan struct{} // closed when the completion goroutine has exited

	// Statistics; any goroutine.
	completed  atomic.Uint64
	canceled   atomic.Uint64
	panicked   atomic.Uint64
	delivered  atomic.Uint64
	drains     atomic.Uint64
	maxDrainSt atomic.Uint64
	chanWakes  atomic.Uint64
	waitErrors atomic.Uint64
}

// New makes a pool. With the default options it starts its completion
// goroutine, its reaper (which retires idle workers; it holds a pipe's two
// ends) and no worker (workers start on demand, up to 64, and exit after
// 10s idle); its completion goroutine is woken through a channel, so it
// holds no eventfd. Invalid options return an error wrapping
// ErrInvalidLimits; New also fails, with the system's error, when it cannot
// make the reaper's pipe or, WithExternalLoop or WithEventfdLoop, the
// loop's eventfd (a pipe on darwin and freebsd): out of file descriptors,
// say. The caller must Close (or Shutdown) the pool to release its
// goroutines and file descriptors.
func New(opts ...Option) (*Pool, error) {
	c := defaultConfig()
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	p := &Pool{
		external:     c.external,
		panicHandler: loopPanicHandler(c.panicHandler),
		maxQueued:    c.maxQueued,
		idleTimeout:  c.idleTimeout,
		minWorkers:   c.minWorkers,
		maxWorkers:   c.maxWorkers,
		spinFor:      c.spin,
		spinTurn:     c.spinTurn,
		quiet:        make(chan struct{}),
		loopDone:     make(chan struct{}),
	}
	p.deferrer.onPanic = p.panicHandler
	// The calls a panicking Flush left wait for the next batch, which must
	// not wait for the next completion: wake the loop for it.
	p.deferrer.onLeft = func() { p.wakeLoop() }
	left := make(chan struct{})
	p.left.Store(&left)
	if c.external || c.loopWake == wakeEventfd {
		n, err := NewNotifier()
		if err != nil {
			return nil, err
		}
		p.notifier = n
	} else {
		p.wakeCh = make(chan struct{}, 1)
		p.resume = make(chan struct{}, 1) // workers may deliver
	}
	if err := p.startReaper(); err != nil {
		if p.notifier != nil {
			p.notifier.Close()
		}
		return nil, err
	}
	p.mu.Lock()
	for p.workers < p.minWorkers {
		p.spawn(false)
	}
	p.mu.Unlock()
	if c.external {
		close(p.loopDone)
	} else {
		go p.loop()
	}
	return p, nil
}

// Submit queues fn to run on a worker and returns a Handle for Cancel. cb,
// which may be nil, runs once on the completion loop with fn's error, or with
// ErrCanceled if the request was canceled before it started. Submit never runs
// cb itself and never waits for a worker. It returns ErrNilFunc for a nil fn,
// ErrQueueFull when the WithMaxQueued bound is reached and ErrClosed once
// Shutdown or Close began (from any goroutine, a Func or Callback included);
// then cb is never called.
//
// A request submitted while the pool has nothing else queued, running or on
// its way to a worker may skip the queue: Submit then hands it to an idle
// worker with the wake-up, and it has started (Cancel returns false, Close
// lets it run). The same holds for SubmitCo and for the first request of a
// Batch.Flush. Which requests go that way depends on timing (a worker
// counts as running until it next takes the pool's lock, see Stats), so
// nothing may depend on it.
//
// The same holds from any goroutine: from a Callback (cb runs later on the
// loop, never nested in the calling Callback), from a Func (the request
// queues behind the others; the Func does not wait for it) and from any other
// goroutine.
func (p *Pool) Submit(fn Func, cb Callback) (Handle, error) {
	e, gen, _, err := p.accept(fn, cb, false)
	if err != nil {
		return Handle{}, err
	}
	return Handle{e: e, gen: gen}, nil
}

// SubmitCo runs fn on a worker and waits until it has returned, then returns
// its error. If ctx ends while the request is still queued, the request is
// canceled (fn never runs) and SubmitCo returns ctx's error (a request handed
// straight to an idle worker is not queued: see Submit); if ctx ends while
// fn runs, SubmitCo returns ctx's error at once and fn finishes in the
// background. SubmitCo returns ErrCanceled when Close, or a Shutdown whose ctx
// ended, canceled the queued request, and the errors of Submit for a request
// it did not accept. If ctx has already ended, SubmitCo returns ctx's error
// and submits nothing (a nil fn is checked first: ErrNilFunc).
//
// The result goes from the worker straight to the caller, not through the
// completion loop, so SubmitCo may be called from any goroutine: from a
// Callback (it then holds up the loop until a worker has run fn; the pool
// never makes that wait for the loop, but if every worker runs a Func that
// waits for a callback, fn never gets a worker), from the goroutine that
// calls RunCompletions, from any other goroutine, and from a Func. A Func
// that calls SubmitCo when no worker is idle and no new one may start (all
// busy at the maximum), or when a worker exits while the request waits to
// start (the one woken for it, above a lowered maximum, say: the pool
// cannot tell which worker it was), runs fn itself, on its own worker, as if
// it called fn: SubmitCo returns fn's error once fn has returned, whatever
// ctx does meanwhile (a panic in fn still comes back as a *PanicError, a
// runtime.Goexit ends the calling Func too).
func (p *Pool) SubmitCo(ctx context.Context, fn Func) error {
	if fn == nil {
		return ErrNilFunc
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	left := *p.left.Load() // closed by a worker that exits from now on
	e, gen, stalled, err := p.accept(fn, nil, true)
	if err != nil {
		return err
	}
	if stalled && p.runCoHere(e, gen) {
		// A Func called SubmitCo and no other worker was free: its worker
		// ran fn itself.
		err = <-e.coCh
	} else {
		err = p.waitCo(ctx, e, gen, left)
	}
	p.release(e)
	return err
}

// waitCo waits for the result of the SubmitCo request e, or for ctx to end,
// which cancels e if it is still queued. left is closed when a worker exits:
// perhaps the one woken for e, which found itself above a lowered maximum.
// A Func waiting here may then have no other worker to come, and runs e
// itself.
func (p *Pool) waitCo(ctx context.Context, e *element, gen uint64, left <-chan struct{}) error {
	for {
		select {
		case err := <-e.coCh:
			return err
		case <-ctx.Done():
			select {
			case err := <-e.coCh: // finished anyway: report the real result
				return err
			default:
				p.cancel(e, gen)
				return ctx.Err()
			}
		case <-left:
			left = nil // once: e has left the queue, or the caller is no worker
			if p.runCoHere(e, gen) {
				return <-e.coCh
			}
		}
	}
}

// accept queues a request, starts a worker for it if needed, and returns the
// element with its generation: once mu is released the element may already
// be done and recycled. stalled reports a SubmitCo request that found no idle
// worker and no room for a new one.
func (p *Pool) accept(fn Func, cb Callback, co bool) (_ *element, _ uint64, stalled bool, _ error) {
	if fn == nil {
		return nil, 0, false, ErrNilFunc
	}
	p.mu.Lock()
	if p.closing.Load() {
		p.mu.Unlock()
		return nil, 0, false, ErrClosed
	}
	if p.maxQueued > 0 && p.waiting(1) > p.maxQueued {
		p.mu.Unlock()
		return nil, 0, false, ErrQueueFull
	}
	e := p.alloc()
	e.fn, e.cb, e.co = fn, cb, co
	if co {
		if e.coCh == nil {
			e.coCh = make(chan error, 1)
		}
		e.refs.Store(2)
	}
	gen := e.gen
	p.pending.Add(1)
	p.submitted++
	// A SubmitCo request that no worker will take without one finishing
	// first: no idle worker, no room for a new one, and as many queued
	// requests as workers on their way that will not exit first (takers).
	stalled = co && p.waiting(1) > 0
	if !p.handOff(e) {
		p.enqueue(e)
		p.dispatch()
	}
	p.mu.Unlock()
	return e, gen, stalled, nil
}

// Cancel cancels the request h if it has not started: it is removed from the
// queue, never runs, and its callback runs once, later, on the completion loop
// with ErrCanceled (never inside Cancel). Cancel returns true in that case
// only. A request that is running or finished, the zero Handle, a Handle of
// another pool, and a Handle whose request is long gone are left alone and
// Cancel returns false, as it does for a request handed straight to an idle
// worker (see Submit). Cancel never waits for a Func or a callback, so the
// same holds from any goroutine: a Callback, a Func (its own request is
// running: false), or any other goroutine. While a Shutdown lets the queued
// requests run, Cancel may still cancel one of them; once Close has canceled
// what was queued, Cancel returns false.
func (p *Pool) Cancel(h Handle) bool {
	if h.e == nil || h.e.pool != p {
		return false
	}
	return p.cancel(h.e, h.gen)
}

func (p *Pool) cancel(e *element, gen uint64) bool {
	p.cancelMu.RLock()
	defer p.cancelMu.RUnlock()
	p.mu.Lock()
	if e.gen != gen || !p.takeUnstarted(e) {
		p.mu.Unlock()
		return false
	}
	e.err = ErrCanceled
	p.mu.Unlock()
	p.canceled.Add(1)
	p.publish(e, nil)
	return true
}

// publish hands a finished element to whoever waits for it: the SubmitCo
// caller, or the completion loop. It reports whether it woke that waiter
// (a SubmitCo caller always counts as woken). Worker w, which then may
// deliver it itself instead of waking the loop (mayDeliver), or a canceler
// (w nil).
func (p *Pool) publish(e *element, w *worker) (woke bool) {
	if e.co {
		e.coCh <- e.err
		p.finishOne()
		p.release(e)
		return true
	}
	p.pushDone(e)
	if p.mayDeliver(w) {
		return false
	}
	return p.wakeLoop()
}

// release drops one reference to a SubmitCo element; the last one recycles it.
func (p *Pool) release(e *element) {
	if e.refs.Add(-1) != 0 {
		return
	}
	select {
	case <-e.coCh: // a result nobody took (the caller left early)
	default:
	}
	p.recycle(e, e, 1)
}

// finishOne records that one accepted request is over, and wakes a Shutdown
// waiting for the last one.
func (p *Pool) finishOne() {
	if p.pending.Add(-1) == 0 && p.closing.Load() {
		p.signalQuiet()
	}
}

func (p *Pool) signalQuiet() {
	p.quietOnce.Do(func() { close(p.quiet) })
	p.wakeLoop()
}

// SetLimits changes the worker limits while the pool runs, validated like New:
// min < 0, max <= 0 and min > max return an error wrapping ErrInvalidLimits.
// Workers up to min start at once; workers above max exit as soon as they are
// idle or finish their current request (and the few queued requests a busy
// worker may have taken with it); queued work gets new workers if max grew:
// one for each queued request that no worker is on its way to yet (those
// started for min take queued requests first), up to max.
// After Shutdown or Close began it returns ErrClosed (limits that are
// invalid are reported as such first). SetLimits never waits
// for a worker, so the same holds from any goroutine: a Callback, a Func (its
// own worker, if above the new max, exits once the Func returns), or any
// other goroutine.
func (p *Pool) SetLimits(min, max int) error {
	if err := validateLimits(min, max); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing.Load() {
		return ErrClosed
	}
	p.minWorkers, p.maxWorkers = min, max
	p.kickSpinner() // the spinner looks at the new limits
	for p.live() < p.minWorkers {
		// A new worker takes a queued request, if one waits for a worker.
		p.spawn(p.unstarted() > p.transit)
	}
	for p.unstarted() > p.transit && p.workers < p.maxWorkers {
		p.spawn(true)
	}
	p.retireIdleAboveMax()
	return nil
}

// Stats is a snapshot of a pool's counters. Counters only grow; the gauges
// (Workers, IdleWorkers, Running, Queued) are what they were at the call.
type Stats struct {
	Submitted uint64 // requests accepted by Submit, SubmitCo and Batch.Flush
	Completed uint64 // Funcs that returned, panicked or called runtime.Goexit
	Canceled  uint64 // requests canceled before they started
	Panicked  uint64 // Funcs that panicked or called runtime.Goexit
	Delivered uint64 // callbacks run (requests with a nil Callback count too); SubmitCo requests, whose result goes to their caller, never count

	Workers     int    // live worker goroutines, those delivering callbacks as the loop included (see Stats)
	IdleWorkers int    // workers waiting for work
	Running     int    // Funcs running now, about to run on a worker woken for them, or just returned (see Stats)
	Queued      int    // requests waiting to start: queued, or held by a busy worker to run next
	Spins       uint64 // times a worker spun for the next request (WithSpin)
	SpinHits    uint64 // spins that ended with the spinning worker taking a request; the rest were spent in vain (WithSpin)
	MinWorkers  int    // the current lower limit (New or SetLimits)
	MaxWorkers  int    // the current upper limit (New or SetLimits)

	// Drains counts the drains that delivered at least one callback: a
	// batch, and each RunCompletions, Close or Shutdown nested in one of
	// its Callbacks, which delivers the rest of the batch as a drain of
	// its own. MaxDrain is the most callbacks one drain delivered itself.
	Drains    uint64
	MaxDrain  uint64
	LoopWakes uint64 // wake-ups written to the completion loop (eventfd writes or channel sends)
	// WaitErrors counts the waits on the loop's eventfd that failed with a
	// read error (by the pool's own loop, or by Close or Shutdown
	// WithExternalLoop).
	// After one, the waiter delivers what is done and polls, 1 to 64 ms
	// apart, until a wait succeeds: no completion is stranded, but they are
	// late, so a count that grows means the descriptor is broken.
	WaitErrors uint64
}

// Stats returns a snapshot of the pool's counters. Any goroutine, before and
// after Close. The counters are read in the reverse of the order in which a
// request moves through them, so a snapshot never shows more requests
// delivered than completed or canceled, or more of those than submitted,
// however many requests pass while it is taken.
//
// Running counts every Func running now, and also the Funcs that have
// returned whose worker has not yet come back for its next request: a worker
// counts its request from when it takes it until it next takes the pool's
// lock, after the result was published, so a request may still count as
// running once its callback has run (a worker that delivers a lone request
// itself stops counting it before the callback). A request handed straight to an idle
// worker (see Submit) counts as running from Submit, SubmitCo or
// Batch.Flush on, before the worker has woken. A worker that runs the
// requests of its hand (see Queued) one after another counts once.
//
// Workers counts a worker that delivers a lone request's callbacks itself,
// as the loop (see the package documentation): it stays a live worker
// goroutine, and counts toward MinWorkers. It does not count toward
// MaxWorkers meanwhile, so that a Callback it runs may wait for a Func:
// while it delivers, Workers may exceed MaxWorkers by one, or for a moment
// by two, while the worker that delivered before it is on its way back.
func (p *Pool) Stats() Stats {
	var s Stats
	s.Drains = p.drains.Load()
	s.Delivered = p.delivered.Load()
	s.MaxDrain = p.maxDrainSt.Load()
	s.Panicked = p.panicked.Load()
	s.Completed = p.completed.Load()
	s.Canceled = p.canceled.Load()
	s.LoopWakes = p.chanWakes.Load()
	p.mu.Lock()
	s.Workers = p.live()
	s.IdleWorkers = len(p.idle)
	s.Running = p.running
	s.Queued = p.unstarted()
	s.MinWorkers = p.minWorkers
	s.MaxWorkers = p.maxWorkers
	s.Submitted = p.submitted
	s.Spins = p.spins
	s.SpinHits = p.spinHits
	p.mu.Unlock()
	s.WaitErrors = p.waitErrors.Load()
	if p.notifier != nil {
		s.LoopWakes = p.notifier.Stats().Writes
	}
	return s
}

// Fd returns the eventfd (on darwin and freebsd, a pipe's read end) that
// becomes readable when completions are waiting, for a pool made
// WithExternalLoop: poll it, then call RunCompletions. It
// returns -1 for a pool that runs its own completion goroutine, and once
// Close or Shutdown has released it: one called from a Func, or a Shutdown
// whose ctx ended, leaves the descriptor, and the callbacks still due, to
// the loop, until its own Close (see Close).
//
// If a write to the eventfd fails (a healthy eventfd never fails), that
// wake-up does not show on Fd: see MissedWakeup. Any goroutine.
func (p *Pool) Fd() int {
	if !p.external {
		return -1
	}
	return p.notifier.Fd()
}

// MissedWakeup reports, for a pool made WithExternalLoop, that a wake-up
// write to Fd failed since RunCompletions last ran, so completions may be
// waiting although Fd is not readable: call RunCompletions. A loop that must
// not depend on the descriptor checks it now and then, on a timer say; the
// next wake-up that is written makes Fd readable again for everything waiting.
// Shutdown and Close need no such help, and once one of them has delivered
// every callback and released Fd (Fd returns -1) nothing can be waiting: it
// is false from then on. It is false for a pool that runs its own completion
// goroutine, which takes missed wake-ups by itself. Any goroutine.
func (p *Pool) MissedWakeup() bool {
	return p.external && p.notifier.Missed()
}
