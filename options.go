package threadpool

import (
	"fmt"
	"time"
)

// Defaults used by New when no option says otherwise. They match the thread
// pool this package is modelled on.
const (
	DefaultMinWorkers  = 0
	DefaultMaxWorkers  = 64
	DefaultIdleTimeout = 10 * time.Second
	// DefaultSpin is how long the last busy worker spins for the next
	// request before it parks (see WithSpin).
	DefaultSpin = 50 * time.Microsecond
)

// An Option configures a Pool in New.
type Option func(*config)

// config is filled by the options in New and copied into the Pool.
type config struct {
	minWorkers   int
	maxWorkers   int
	idleTimeout  time.Duration
	maxQueued    int
	external     bool
	panicHandler func(v any)
	loopWake     wakeKind
	spin         time.Duration
	spinTurn     time.Duration // longest turn of a spin (spin.go); changed by tests only
}

// wakeKind selects how workers wake the pool's own completion goroutine.
type wakeKind int

const (
	// wakeChan wakes the completion goroutine with a Go channel send; it
	// measured faster than an eventfd waited on through the netpoller.
	wakeChan wakeKind = iota
	// wakeEventfd uses the same Notifier that WithExternalLoop exposes.
	wakeEventfd
)

func defaultConfig() config {
	return config{
		minWorkers:  DefaultMinWorkers,
		maxWorkers:  DefaultMaxWorkers,
		idleTimeout: DefaultIdleTimeout,
		loopWake:    wakeChan,
		spin:        DefaultSpin,
		spinTurn:    maxSpinTurn,
	}
}

func (c *config) validate() error {
	if err := validateLimits(c.minWorkers, c.maxWorkers); err != nil {
		return err
	}
	if c.idleTimeout <= 0 {
		return fmt.Errorf("%w: idle timeout %v must be positive", ErrInvalidLimits, c.idleTimeout)
	}
	if c.spin < 0 {
		return fmt.Errorf("%w: spin %v must not be negative", ErrInvalidLimits, c.spin)
	}
	if c.maxQueued < 0 {
		return fmt.Errorf("%w: max queued %d must not be negative", ErrInvalidLimits, c.maxQueued)
	}
	return nil
}

func validateLimits(min, max int) error {
	switch {
	case min < 0:
		return fmt.Errorf("%w: min workers %d < 0", ErrInvalidLimits, min)
	case max <= 0:
		return fmt.Errorf("%w: max workers %d <= 0", ErrInvalidLimits, max)
	case min > max:
		return fmt.Errorf("%w: min workers %d > max workers %d", ErrInvalidLimits, min, max)
	}
	return nil
}

// WithMinWorkers sets how many workers are kept alive while idle (default 0).
// They are started by New. A negative n, or one above the maximum, makes New
// fail with ErrInvalidLimits.
func WithMinWorkers(n int) Option { return func(c *config) { c.minWorkers = n } }

// WithMaxWorkers sets how many workers may run at once (default 64). An n
// below 1, or below the minimum, makes New fail with ErrInvalidLimits.
func WithMaxWorkers(n int) Option { return func(c *config) { c.maxWorkers = n } }

// WithIdleTimeout sets how long a worker waits for work before it exits, when
// more than the minimum are alive (default 10s). A worker exits once it has
// been idle for at least d and at most about 2d (at least a millisecond): the
// pool's reaper checks every d, waiting in a blocking poll(2) rather than on
// a Go timer, so that the request path reads no clock and no timer of the pool
// is armed in normal operation. d must be positive.
func WithIdleTimeout(d time.Duration) Option { return func(c *config) { c.idleTimeout = d } }

// WithMaxQueued bounds the requests waiting for a worker: when n are waiting,
// Submit and SubmitCo return ErrQueueFull (and Batch.Flush, for a batch that
// would take the count above n). 0, the default, means unbounded. Requests
// that are running do not count, nor queued ones that a woken, an idle, a
// just-started (for WithMinWorkers, say) or a yet-to-start worker (fewer
// than max are alive) will take. While SetLimits has left more workers than
// max, as many as the pool has above max will exit before they take one,
// and the count assumes that the woken workers are among them: the queued
// requests count as waiting until a worker that stays is on its way. A
// negative n makes New fail with ErrInvalidLimits.
func WithMaxQueued(n int) Option { return func(c *config) { c.maxQueued = n } }

// WithSpin sets how long a worker may spin, watching for the next request,
// before it parks (default DefaultSpin, 50µs); 0 turns spinning off, and a
// negative d makes New fail with ErrInvalidLimits.
//
// Only one worker spins at a time: one that finds the queue empty while at
// most one other worker runs a request, and whose own last request did not
// wake the completion loop. It yields its processor at every turn, so that
// the loop and the submitters run first, and it stops at once when a request
// is queued, and on Close, Shutdown or SetLimits. Between rounds of
// submissions this keeps a processor awake for the next round instead of
// letting its thread sleep (tens of microseconds to wake on a virtual
// machine). Lone requests never make a worker spin (the completion of one
// wakes the parked loop, or its worker delivers it), and an idle pool stops
// spinning within d of its last request. A spin also ends, and the worker
// parks, when its processor, having run other goroutines for more than 2µs
// between two of its turns, has nothing else to run: a goroutine that ran
// there may now wait for a descriptor, which the processor polls only once
// it runs dry.
//
// What a spin costs: its thread keeps a CPU busy that other processes cannot
// use meanwhile, and its processor does not poll the network, so a goroutine
// woken by a descriptor (a socket, an eventfd) runs on another processor or
// after the spin. WithSpin(0) suits a machine whose CPUs other processes
// need (a client on the same machine, say) more than the pool needs its
// next round started early. Stats.Spins counts the spins and Stats.SpinHits
// those that ended with the spinning worker taking a request: when few of
// them do, the spins are spent in vain, and a shorter d, or 0, saves their
// CPU.
func WithSpin(d time.Duration) Option { return func(c *config) { c.spin = d } }

// WithExternalLoop makes the pool start no completion goroutine. The caller's
// own event loop waits until Fd is readable and calls RunCompletions, which
// runs the callbacks on the caller's goroutine. RunCompletions, Close and
// Shutdown must then be called from that loop goroutine (from inside a Callback
// too), or once the loop has stopped calling RunCompletions, by one goroutine
// at a time, since each of them delivers callbacks on its caller; Close and
// Shutdown called from a Func are the exception: they deliver nothing (see
// Close). Should a write to Fd fail, MissedWakeup says so.
func WithExternalLoop() Option { return func(c *config) { c.external = true } }

// WithPanicHandler makes the pool recover a panicking Callback (or Flusher run
// at the end of a batch) and pass the panic value to h, on the goroutine
// that delivers it: the pool's completion goroutine (or the worker that
// delivers a lone request in its place), or, WithExternalLoop, the caller of
// RunCompletions, Close or Shutdown; delivery then goes on
// with the next callback. Without a handler such a panic is re-raised as a
// *PanicError, which ends the program on the pool's own completion
// goroutine and on a worker. A nil h restores the default.
func WithPanicHandler(h func(v any)) Option { return func(c *config) { c.panicHandler = h } }

// withLoopWake selects the default loop's wake-up mechanism; tests and
// benchmarks compare the two.
func withLoopWake(k wakeKind) Option { return func(c *config) { c.loopWake = k } }
