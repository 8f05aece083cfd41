package nbd

// Flusher is what a completion callback asks the Executor to run once when
// the current batch of completions ends. Its method set matches the
// threadpool package's Flusher, so the same value serves both.
type Flusher interface {
	Flush()
}

// Executor runs the blocking part of each request away from the connection
// goroutines and delivers completions on a single goroutine.
type Executor interface {
	// Submit may be called from any goroutine. It arranges for work to run
	// on some goroutine and then for done to run, with work's result, on
	// the Executor's single completion goroutine, one callback at a time.
	// If Submit returns an error, neither function is ever called.
	Submit(work func() error, done func(error)) error

	// Defer may be called only from inside a done callback. It arranges
	// for f.Flush to run on the completion goroutine once per distinct f
	// when the current batch of completions ends. An Executor may also run
	// it at once, which turns batching off.
	Defer(f Flusher)
}
