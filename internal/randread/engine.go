package randread

import (
	"fmt"

	"github.com/batchio/threadpool"
)

// Design is how the reads are executed and their completions brought back to
// the one completion loop.
type Design int

const (
	// Pool uses a threadpool.Pool: its workers read, its completion loop runs
	// the callbacks in batches.
	Pool Design = iota
	// Goroutine starts a goroutine per request, which sends the finished
	// request on a channel to one loop goroutine.
	Goroutine
	// ChanPool feeds a fixed set of worker goroutines through a channel; they
	// send finished requests on a channel to one loop goroutine.
	ChanPool
)

// Designs lists every Design, the library's first.
var Designs = []Design{Pool, Goroutine, ChanPool}

var designNames = [...]string{Pool: "pool", Goroutine: "goroutine", ChanPool: "chanpool"}

// String returns the design's name: "pool", "goroutine" or "chanpool".
func (d Design) String() string {
	if d >= 0 && int(d) < len(designNames) {
		return designNames[d]
	}
	return fmt.Sprintf("Design(%d)", int(d))
}

// ParseDesign returns the Design named s, or an error naming the valid
// designs.
func ParseDesign(s string) (Design, error) {
	for d, name := range designNames {
		if s == name {
			return Design(d), nil
		}
	}
	return 0, fmt.Errorf("unknown design %q (want pool, goroutine or chanpool)", s)
}

// engine executes reads and runs request.complete for each of them on one
// completion goroutine.
type engine interface {
	// newIssuer returns what one job goroutine submits its reads through.
	newIssuer() issuer
	// deferCall defers f.Flush to the end of the loop's current batch.
	// Completion loop only.
	deferCall(f threadpool.Flusher)
	// stats returns the loop's counters so far.
	stats() loopStats
	// close stops the engine once nothing is in flight, and waits for its
	// goroutines.
	close()
}

// issuer submits one job's reads: submit starts r.readFn elsewhere (at the
// latest at the next flush) and r.doneFn follows on the loop; flush hands
// over what submit recorded. One job goroutine.
type issuer interface {
	submit(r *request) error
	flush() error
}

// loopStats counts what the completion loop did.
type loopStats struct {
	drains    uint64 // batches delivered
	delivered uint64 // completions delivered
	wakes     uint64 // wake-ups written to the loop
	spinHits  uint64 // spins of a worker that ended with it taking a request (the pool alone)
}

// poolEngine is the library.
type poolEngine struct{ p *threadpool.Pool }

func newPoolEngine() (*poolEngine, error) {
	p, err := threadpool.New()
	if err != nil {
		return nil, err
	}
	return &poolEngine{p: p}, nil
}

// newIssuer gives the job a Batch: it resubmits a whole used list under one
// lock, with as many wake-ups as workers can start at once.
func (e *poolEngine) newIssuer() issuer { return batchIssuer{e.p.NewBatch()} }

type batchIssuer struct{ b *threadpool.Batch }

func (i batchIssuer) submit(r *request) error { return i.b.Add(r.readFn, r.doneFn) }
func (i batchIssuer) flush() error            { return i.b.Flush() }

func (e *poolEngine) deferCall(f threadpool.Flusher) { e.p.DeferCall(f) }

func (e *poolEngine) stats() loopStats {
	s := e.p.Stats()
	return loopStats{drains: s.Drains, delivered: s.Delivered, wakes: s.LoopWakes, spinHits: s.SpinHits}
}

func (e *poolEngine) close() { e.p.Close() }
