package main

import (
	"github.com/batchio/threadpool"
	"github.com/batchio/threadpool/internal/nbd"
)

// poolExec runs the server's requests on a threadpool.Pool: the work on
// its workers, the replies on its completion goroutine, and the
// connections' flushes once per batch of completions (DeferCall).
type poolExec struct {
	pool *threadpool.Pool
}

// Submit hands one request to the pool. Any goroutine.
func (e poolExec) Submit(work func() error, done func(error)) error {
	_, err := e.pool.Submit(work, done)
	return err
}

// Defer defers f to the end of the current batch. Completion callbacks only.
func (e poolExec) Defer(f nbd.Flusher) { e.pool.DeferCall(f) }

// eachExec is poolExec without batching: every reply is flushed as soon as
// its callback has appended it (-flush=each), for comparison.
type eachExec struct {
	poolExec
}

// Defer runs f at once. Completion callbacks only.
func (eachExec) Defer(f nbd.Flusher) { f.Flush() }
