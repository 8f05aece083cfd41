package randread

import (
	"fmt"
	"io"

	"github.com/batchio/threadpool"
)

// request is one in-flight read, reused for the whole life of its job so that
// the steady state allocates nothing.
type request struct {
	job *job
	buf []byte // bs bytes; written by the executor during the read

	// Written by the job goroutine before the request is submitted.
	off   int64
	start int64 // submit time, in ns since the workload's epoch

	// Written by the executor (worker or goroutine) that performs the read,
	// before it hands the request to the completion loop.
	n   int
	err error

	// next links the job's used list; written by the completion loop before
	// the push, read by the job goroutine after the take.
	next *request

	// Bound once in newRequest so that Submit allocates nothing.
	readFn threadpool.Func
	doneFn threadpool.Callback
}

func newRequest(j *job, bs int) *request {
	r := &request{job: j, buf: make([]byte, bs)}
	r.readFn = r.read
	r.doneFn = r.complete
	return r
}

// read performs the pread. Executor goroutine.
func (r *request) read() error {
	r.n, r.err = r.job.w.file.ReadAt(r.buf, r.off)
	return r.err
}

// complete hands the finished request to its job and notifies the job as the
// workload's mode says. Completion loop only.
func (r *request) complete(err error) {
	r.err = err
	j := r.job
	j.used.push(r)
	switch j.w.mode {
	case Each:
		j.irq.Notify()
	default:
		j.w.eng.deferCall(j.irq)
	}
}

// check returns an error unless the read returned the whole block.
func (r *request) check() error { return checkRead(r.off, r.n, len(r.buf), r.err) }

// checkRead returns an error wrapping ErrShortRead unless a read of bs bytes
// at off returned n == bs and no error: the rule every subject applies to
// every read.
func checkRead(off int64, n, bs int, err error) error {
	if err == nil && n == bs {
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: read at offset %d returned %d of %d bytes: %w",
		ErrShortRead, off, n, bs, err)
}
