package threadpool

// Test-only access to unexported knobs, for this package's external tests and
// benchmarks.

// WithEventfdLoop makes the default completion goroutine wait on an eventfd
// Notifier instead of a channel, to compare the two wake-ups.
func WithEventfdLoop() Option { return withLoopWake(wakeEventfd) }

// SetWriteFault makes every later signal write of n return f's error instead
// of writing (nil f restores real writes). Call it before n is shared.
func SetWriteFault(n *Notifier, f func() error) { n.writeFault = f }

// SetReadFault makes every later read of n by Wait and Clear return f's error
// instead of reading (nil f restores real reads). It may be called while n is
// in use.
func SetReadFault(n *Notifier, f func() error) {
	if f == nil {
		n.readFault.Store(nil)
		return
	}
	n.readFault.Store(&f)
}

// LoopNotifier returns the Notifier the pool's loop waits on, or nil when the
// loop is woken through a channel.
func LoopNotifier(p *Pool) *Notifier { return p.notifier }

// RaceBuild reports a -race build.
const RaceBuild = raceBuild

// EventfdNotifier reports that a Notifier is an eventfd, not a pipe pair.
const EventfdNotifier = eventfdNotifier
