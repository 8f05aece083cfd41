package threadpool

import (
	"runtime"
	"time"
)

// Spinning: a worker that runs out of work keeps its processor awake.
//
// A pool at depth works in rounds: the workers drain the queue, the loop
// delivers the completions, and their callbacks (or the goroutines they
// notify) submit the next round. When every worker parks at the end of a
// round, the Go processors they ran on run dry and their threads go to
// sleep, one in the network poller and the others on a futex, and the next
// round waits for them to wake. In a trace of one job at iodepth 64 on a
// 2-CPU virtual machine, the submitter, woken through its eventfd, ran 13 to
// 17us after the loop's write, and the workers it woke ran on the second
// processor 30us after that: about 60us of an idle processor in every round
// of some 60 reads, a third of a core in all.
//
// So a worker that finds the queue empty while at most one other worker runs
// a request does not park at once: it spins for up to Pool.spinFor
// (WithSpin), yielding its processor at every turn (runtime.Gosched) so that
// the loop and the submitter run first, and takes the next request as soon
// as one is queued. Its processor stays awake, so the other one polls the
// network itself when the loop parks (the submitter then ran 1us after the
// loop's write), and the next round's first request needs no wake-up: the
// spinner counts as a worker in transit (worker.go), and dispatch kicks it
// instead of waking another.
//
// Three rules keep the spin from costing what it saves:
//   - A worker whose last request woke the completion loop does not spin.
//     The loop is about to run, and a spinning worker, always runnable,
//     keeps its processor from ever running dry and polling the network,
//     which is where a submitter waiting on a descriptor (an eventfd, a
//     socket) is woken: one request at a time would wait for every spin to
//     end (an eighth of the reads per second of one job at iodepth 1, when
//     every worker spun).
//   - One worker spins at most, only while at most one other worker runs a
//     request, and for a bounded time: a pool that has gone idle stops
//     spinning within spinFor of its last request. Lone requests never make
//     a worker spin: a request whose completion finds the loop parked wakes
//     it, and one that its worker delivers itself (delivery.go) counts as
//     waking it. Until 2026-11-28 a worker spun only while no other worker
//     ran a request and 16 accepted requests or more waited for their
//     callbacks. At the end of a round of one job at iodepth 64, the first
//     of two workers to run dry then parked while the other finished its
//     read, and the last one often found the loop had started most of the
//     callbacks: the workers parked, and a processor went idle. On the 2-CPU
//     VM, whose kernel packs the threads of a process that leaves a CPU idle
//     onto the other one, the pool then ran on one CPU in about half the
//     runs. With the rule as it is, it kept both CPUs in use in most runs:
//     1.70x to 1.85x a goroutine per request, against 1.49x to 1.68x with
//     the old rule, in alternated runs of one build (cmd/tpbench/README.md).
//     A worker that spins whatever other workers run lost elsewhere: 64
//     empty requests in flight took 1.85x as long. The rule as it is costs
//     them 1.3x to 1.4x (BenchmarkSubmit, inflight=64: about 105 ns a
//     request against 79, still under half a goroutine per request's time).
//   - A spin whose processor runs other goroutines ends once that
//     processor goes quiet again: a turn longer than spinTurn means that
//     others ran (the loop delivering the round, a submitter), and the
//     first short turn after it that they are done, perhaps waiting for
//     the network (a submitter notified through an eventfd), which the
//     processor polls only when it runs dry. Spinning on would hold that
//     wake-up until the spin's end. On the 2-CPU VM, whose kernel packs
//     threads onto busy CPUs, about half the rounds of one job at iodepth
//     64 ran on one processor with the loop, the job and the spinner, and
//     waited so; this rule gained 1.10-1.25x there (cmd/tpbench/README.md).

// maxSpinTurn is the default spinTurn: a turn of a spin with nothing else to
// run takes well under a microsecond (a Gosched, a clock read).
const maxSpinTurn = 2 * time.Microsecond

// shouldSpin reports whether a worker that found the queue empty, and whose
// last request did not wake the completion loop, may spin: spinning is on,
// no other worker spins, and at most one runs a request. mu held.
func (p *Pool) shouldSpin() bool {
	return p.spinFor > 0 && p.spinner == nil && p.running <= 1
}

// spin makes w the spinner, in transit, and waits without mu until it is
// kicked, spinFor has passed, or its processor went quiet after running
// other goroutines (a turn longer than spinTurn, then a short one). It
// does not stop when the last callback starts: that callback is what
// submits the next round. mu held on entry and on return; the caller then
// looks at the queue again, and w arrives there.
func (p *Pool) spin(w *worker) {
	w.transit = true
	p.transit++
	w.kick.Store(false)
	p.spinner = w
	p.spins++
	p.mu.Unlock()
	start := time.Now()
	shared := false // other goroutines have run on this processor
	for last := time.Duration(0); !w.kick.Load(); {
		runtime.Gosched()
		d := time.Since(start)
		long := d-last > p.spinTurn
		if d >= p.spinFor || (shared && !long) {
			break // spent, or the processor went quiet after other work
		}
		shared = shared || long
		last = d
	}
	p.mu.Lock()
	if p.spinner == w { // not kicked: nobody else will take it off
		p.spinner = nil
	}
}

// kickSpinner ends the spin of the spinning worker, if any: work was queued,
// or the pool's limits or state changed. mu held.
func (p *Pool) kickSpinner() {
	if w := p.spinner; w != nil {
		w.kick.Store(true)
		p.spinner = nil
	}
}
