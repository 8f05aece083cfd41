package randread

import (
	"sync"
	"sync/atomic"

	"github.com/batchio/threadpool"
)

// chanLoop is the completion loop a Go program writes without the library:
// one goroutine receives finished requests from a channel and, to get the
// same batching as the pool, completes everything already queued inside one
// Deferrer region.
type chanLoop struct {
	results chan *request
	d       threadpool.Deferrer // loop goroutine only
	done    chan struct{}       // closed when the loop goroutine returns

	drains    atomic.Uint64
	delivered atomic.Uint64
}

func newChanLoop(depth int) *chanLoop {
	l := &chanLoop{results: make(chan *request, depth), done: make(chan struct{})}
	go l.run()
	return l
}

func (l *chanLoop) run() {
	defer close(l.done)
	for r := range l.results {
		l.d.Begin()
		r.complete(r.err)
		n := uint64(1)
		for more := len(l.results); more > 0; more-- {
			r = <-l.results
			r.complete(r.err)
			n++
		}
		l.d.End()
		l.drains.Add(1)
		l.delivered.Add(n)
	}
}

func (l *chanLoop) deferCall(f threadpool.Flusher) { l.d.Call(f) }

func (l *chanLoop) stats() loopStats {
	return loopStats{drains: l.drains.Load(), delivered: l.delivered.Load()}
}

// stop ends the loop goroutine once every sender is gone.
func (l *chanLoop) stop() {
	close(l.results)
	<-l.done
}

// goroutineEngine starts one goroutine per read.
type goroutineEngine struct {
	*chanLoop
	wg sync.WaitGroup
}

func newGoroutineEngine(depth int) *goroutineEngine {
	return &goroutineEngine{chanLoop: newChanLoop(depth)}
}

func (e *goroutineEngine) newIssuer() issuer { return e }

func (e *goroutineEngine) flush() error { return nil }

func (e *goroutineEngine) submit(r *request) error {
	e.wg.Add(1)
	go e.exec(r)
	return nil
}

func (e *goroutineEngine) exec(r *request) {
	defer e.wg.Done()
	r.read()
	e.results <- r
}

func (e *goroutineEngine) close() {
	e.wg.Wait()
	e.stop()
}

// chanPoolEngine runs a fixed set of workers fed through a channel.
type chanPoolEngine struct {
	*chanLoop
	reqs chan *request
	wg   sync.WaitGroup
}

func newChanPoolEngine(depth, workers int) *chanPoolEngine {
	e := &chanPoolEngine{chanLoop: newChanLoop(depth), reqs: make(chan *request, depth)}
	e.wg.Add(workers)
	for range workers {
		go e.work()
	}
	return e
}

func (e *chanPoolEngine) newIssuer() issuer { return e }

func (e *chanPoolEngine) flush() error { return nil }

func (e *chanPoolEngine) submit(r *request) error {
	e.reqs <- r
	return nil
}

func (e *chanPoolEngine) work() {
	defer e.wg.Done()
	for r := range e.reqs {
		r.read()
		e.results <- r
	}
}

func (e *chanPoolEngine) close() {
	close(e.reqs)
	e.wg.Wait()
	e.stop()
}
