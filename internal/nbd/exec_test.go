package nbd

import (
	"errors"
	"sync"
	"testing"
)

// testExec is a small Executor for the tests: a few worker goroutines and
// one completion goroutine that runs every completion available at once as
// one batch, then each distinct deferred Flusher once.
type testExec struct {
	tasks chan testTask

	mu          sync.Mutex
	cond        sync.Cond     // signals completions and close; uses mu
	completions []testDone    // guarded by mu
	outstanding int           // guarded by mu; submitted, callback not yet run
	submitted   int           // guarded by mu; ever submitted
	closed      bool          // guarded by mu
	hold        chan struct{} // guarded by mu; when non-nil, work waits for it to close
	paused      bool          // guarded by mu; the completion goroutine waits while set

	deferred []Flusher // completion goroutine only
	inBatch  bool      // completion goroutine only
	flushes  int       // completion goroutine only; Flush calls run
	maxBatch int       // completion goroutine only; largest batch seen

	wg sync.WaitGroup
}

type testTask struct {
	work func() error
	done func(error)
}

type testDone struct {
	done func(error)
	err  error
}

var errExecClosed = errors.New("test executor closed")

func newTestExec(t *testing.T, workers int) *testExec {
	e := &testExec{tasks: make(chan testTask, 1024)}
	e.cond.L = &e.mu
	for range workers {
		e.wg.Go(e.worker)
	}
	e.wg.Go(e.loop)
	t.Cleanup(e.close)
	return e
}

func (e *testExec) Submit(work func() error, done func(error)) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return errExecClosed
	}
	e.outstanding++
	e.submitted++
	e.mu.Unlock()
	e.cond.Broadcast()
	e.tasks <- testTask{work, done}
	return nil
}

func (e *testExec) Defer(f Flusher) {
	if !e.inBatch {
		f.Flush()
		return
	}
	for _, g := range e.deferred {
		if g == f {
			return
		}
	}
	e.deferred = append(e.deferred, f)
}

// holdWork makes work wait until the returned function is called.
func (e *testExec) holdWork() (release func()) {
	ch := make(chan struct{})
	e.mu.Lock()
	e.hold = ch
	e.mu.Unlock()
	return sync.OnceFunc(func() {
		e.mu.Lock()
		e.hold = nil
		e.mu.Unlock()
		close(ch)
	})
}

func (e *testExec) worker() {
	for t := range e.tasks {
		e.mu.Lock()
		hold := e.hold
		e.mu.Unlock()
		if hold != nil {
			<-hold
		}
		err := t.work()
		e.mu.Lock()
		e.completions = append(e.completions, testDone{t.done, err})
		e.mu.Unlock()
		e.cond.Broadcast()
	}
}

func (e *testExec) loop() {
	var batch []testDone
	for {
		e.mu.Lock()
		for e.paused || (len(e.completions) == 0 && !(e.closed && e.outstanding == 0)) {
			e.cond.Wait()
		}
		if len(e.completions) == 0 {
			e.mu.Unlock()
			close(e.tasks)
			return
		}
		batch, e.completions = e.completions, batch[:0]
		e.mu.Unlock()

		e.inBatch = true
		for _, d := range batch {
			d.done(d.err)
		}
		e.inBatch = false
		for _, f := range e.deferred {
			f.Flush()
		}
		e.flushes += len(e.deferred)
		clear(e.deferred)
		e.deferred = e.deferred[:0]
		e.maxBatch = max(e.maxBatch, len(batch))
		e.mu.Lock()
		e.outstanding -= len(batch)
		e.mu.Unlock()
		e.cond.Broadcast()
		clear(batch)
	}
}

// close refuses new work, waits for every callback and stops the goroutines.
func (e *testExec) close() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.cond.Broadcast()
	e.wg.Wait()
}

// stats returns counters kept by the completion goroutine, once idle.
func (e *testExec) stats() (flushes, maxBatch int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for e.outstanding > 0 {
		e.cond.Wait()
	}
	return e.flushes, e.maxBatch
}

// submittedCount returns how many requests have been submitted in all.
func (e *testExec) submittedCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.submitted
}

// waitSubmitted waits until n requests in all have been submitted.
func (e *testExec) waitSubmitted(n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for e.submitted < n {
		e.cond.Wait()
	}
}

// pauseDelivery stops the completion goroutine until the returned function
// is called, so that the completions that arrive meanwhile form one batch.
func (e *testExec) pauseDelivery() (resume func()) {
	e.mu.Lock()
	e.paused = true
	e.mu.Unlock()
	return func() {
		e.mu.Lock()
		e.paused = false
		e.mu.Unlock()
		e.cond.Broadcast()
	}
}

// waitCompleted waits until n completions are waiting for delivery.
func (e *testExec) waitCompleted(n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for len(e.completions) < n {
		e.cond.Wait()
	}
}
