package randread

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/batchio/threadpool"
)

// job is one virtqueue with the vCPU that drives it: it keeps iodepth reads
// in flight, waits on its irq notifier, takes its used list and resubmits.
type job struct {
	w    *Workload
	irq  *threadpool.Notifier // the job's eventfd; written by the loop
	used usedList             // filled by the loop, taken by the job
	iss  issuer               // the job's way to submit; job goroutine only
	reqs []*request           // the job's requests, iodepth of them

	// Job goroutine only (read by Run once the job goroutine is done).
	rng        *rand.Rand // draws from pcg
	lat        Histogram
	ios        uint64
	err        error
	inflight   int
	issued     int64
	staged     int    // issued since the last flush
	unreported uint64 // reaped, not yet added to the workload's progress

	// pcg is the generator's state, written by every draw: inside the job,
	// away from the fields other goroutines write, and padded so that no two
	// jobs' generators share a cache line (a false-sharing miss per read that
	// a Ceiling thread does not pay).
	pcg rand.PCG
	_   [cacheLinePad]byte
}

// waitIRQ is how a job waits on its notifier; tests replace it.
var waitIRQ = (*threadpool.Notifier).Wait

// After a failed wait, a job polls its used list instead, pausing minPoll
// before the second poll and doubling the pause up to maxPoll, as the pool's
// completion loop does after a failed wait.
const (
	minPoll = time.Millisecond
	maxPoll = 64 * time.Millisecond
)

// run keeps the job's depth until quota reads were issued (quota < 0: until
// the workload stops), waits for the last ones, and returns. It never
// returns with a read in flight, since the next run reuses the requests: if
// a wait on the notifier fails, it records the error, which stops the
// workload, and takes the reads still in flight off the used list as they
// complete, without the notifier. Job goroutine.
func (j *job) run(quota int64) {
	j.issued, j.inflight, j.err = 0, 0, nil
	now := j.w.now()
	for _, r := range j.reqs {
		j.issue(r, quota, now)
	}
	j.flush()
	polls := 0 // polls of the used list since a wait failed
	for j.inflight > 0 {
		if polls > 0 {
			d := maxPoll
			if polls <= 6 {
				d = minPoll << (polls - 1)
			}
			time.Sleep(d)
			polls++
		} else if err := waitIRQ(j.irq, context.Background()); err != nil {
			j.fail(err)
			polls = 1
		}
		j.reap(quota)
	}
	j.w.progress.Add(j.unreported)
	j.unreported = 0
}

// reap takes every request on the used list, checks and records its read,
// and hands it to issue, which resubmits it unless the quota is issued or
// the workload is stopping. One clock read serves the whole list: it ends
// the latency of each reaped read and starts that of each read issued (so
// the latency of a read issued late in a long list also counts the time the
// job spent on the reads before it: a microsecond or two at iodepth 64).
// Job goroutine.
func (j *job) reap(quota int64) {
	now := j.w.now()
	n := 0
	for r := j.used.take(); r != nil; {
		next := r.next
		r.next = nil
		j.inflight--
		n++
		if err := r.check(); err != nil {
			j.fail(err)
		} else {
			j.ios++
			j.lat.Record(time.Duration(now - r.start))
		}
		j.issue(r, quota, now)
		r = next
	}
	j.flush()
	// Batched as a Ceiling thread batches, so that the jobs do not contend
	// on the shared counter once per reap.
	if j.unreported += uint64(n); j.unreported >= progressBatch {
		j.w.progress.Add(j.unreported)
		j.unreported = 0
	}
}

// issue submits r at a fresh random offset unless the job has issued its
// quota or the workload is stopping; now is its submit time. Job goroutine.
func (j *job) issue(r *request, quota, now int64) {
	if j.w.stopping() || (quota >= 0 && j.issued >= quota) {
		return
	}
	r.off = j.rng.Int64N(j.w.blocks) * int64(len(r.buf))
	r.n, r.err = 0, nil
	r.start = now
	if err := j.iss.submit(r); err != nil {
		j.fail(err)
		return
	}
	j.issued++
	j.inflight++
	j.staged++
}

// flush hands the reads issued since the last flush to the engine; if it
// refuses them, they are not in flight. Job goroutine.
func (j *job) flush() {
	n := j.staged
	j.staged = 0
	if err := j.iss.flush(); err != nil {
		j.inflight -= n
		j.issued -= int64(n)
		j.fail(err)
	}
}

// fail records the job's first error and stops the whole workload.
func (j *job) fail(err error) {
	if j.err == nil {
		j.err = err
	}
	j.w.halt()
}
