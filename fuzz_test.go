package threadpool_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/batchio/threadpool"
)

// Operations of the pool fuzzer, after the fnKinds submit operations (one
// per kind of Func); each takes one argument byte.
const (
	opNilFunc        = fnKinds + iota // Submit or SubmitCo a nil Func
	opCancel                          // cancel an earlier request, the zero Handle included
	opOpenGate                        // let a slow Func finish
	opSubmitCo                        // SubmitCo, with an ended context or in the background
	opEndCtx                          // end a background SubmitCo's context
	opSetLimits                       // SetLimits, valid or not (takes a second byte)
	opRunCompletions                  // RunCompletions
	opClose                           // Close, Shutdown, or Shutdown with an expired context
	opBatchAdd                        // record a request of any kind in the test's Batch
	opBatchFlush                      // Flush the test's Batch
	opCount
)

// maxFuzzOps bounds the operations of one input, so that each is quick.
const maxFuzzOps = 64

// fuzzRun runs one fuzz input against a pool and its model.
type fuzzRun struct {
	t         *testing.T
	p         *threadpool.Pool
	m         fuzzModel
	external  bool
	maxQueued bool
	closed    bool       // Close or Shutdown began: requests are refused
	released  bool       // Close or Shutdown returned nil: nothing is left to deliver
	co        []*fuzzReq // background SubmitCo requests
	batch     *threadpool.Batch
	batched   []*fuzzReq // recorded in batch, not yet flushed
	coWG      sync.WaitGroup
	data      []byte
}

// next takes the next input byte, 0 once the input is used up.
func (r *fuzzRun) next() byte {
	if len(r.data) == 0 {
		return 0
	}
	b := r.data[0]
	r.data = r.data[1:]
	return b
}

// FuzzPool decodes its input into a pool configuration and a sequence of
// operations, runs them against a real pool and checks every callback, every
// returned error and the final Stats against a model; after each input no
// goroutine and no descriptor is left over.
func FuzzPool(f *testing.F) {
	f.Add([]byte{0, 1, 0, 1, 3, 1, 3, 1, opCancel, 2, opOpenGate, 0, opClose, 0})
	// Funcs that call the pool: SubmitCo and Submit with one worker busy,
	// Cancel, then Shutdown and Close from Funcs while a slow one runs.
	f.Add([]byte{0, 1, fnSlow, 1, fnSubmitCo, 1, fnSubmit, 1, fnCancel, 1,
		fnShutdown, 2, fnClose, 1, opOpenGate, 0, fnSubmit, 1})
	f.Add([]byte{2, 0, fnSubmitCo, 1, fnShutdown, 1, fnSlow, 1, opSubmitCo, 2 * fnClose,
		opRunCompletions, 0, opOpenGate, 0, opRunCompletions, 0})
	// Batches: from the test, filled before and flushed after a slow Func
	// took the one worker, with a bounded queue; and from Funcs.
	f.Add([]byte{6, 0, fnSlow, 1, opBatchAdd, fnKinds + fnQuick, opBatchAdd, fnKinds + fnBatch,
		opBatchAdd, fnPanic, opBatchFlush, 0, opBatchAdd, fnKinds + fnFail, opBatchAdd, fnKinds + fnSubmitCo,
		opBatchFlush, 0, opOpenGate, 0, opBatchAdd, fnKinds + fnGoexit, opClose, 1, opBatchFlush, 0})
	f.Add([]byte{2, 2, fnBatch, 1, opBatchAdd, fnKinds + fnBatch, opBatchAdd, fnKinds + fnShutdown,
		opBatchAdd, fnKinds + fnSlow, opBatchFlush, 0, opSubmitCo, 2 * fnBatch, opRunCompletions, 0,
		opOpenGate, 0, opBatchAdd, fnKinds + fnBatch})
	f.Fuzz(func(t *testing.T, data []byte) {
		fds := openFds(t)
		leaks := goleak.IgnoreCurrent()
		runFuzz(t, data)
		goleak.VerifyNone(t, leaks)
		if fds >= 0 {
			require.Equal(t, fds, openFds(t), "descriptors left open")
		}
	})
}

func runFuzz(t *testing.T, data []byte) {
	r := &fuzzRun{t: t, data: data}
	b := r.next()
	mode := loopModes[int(b)%len(loopModes)]
	opts := append([]threadpool.Option{
		threadpool.WithMinWorkers(int(b / 3 % 2)),
		threadpool.WithMaxWorkers(1 + int(r.next()%4)),
	}, mode.opts...)
	if b/6%2 == 1 {
		r.maxQueued = true
		opts = append(opts, threadpool.WithMaxQueued(3))
	}
	r.external = mode.external
	p, err := threadpool.New(opts...)
	require.NoError(t, err)
	expired, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	r.p, r.m.p, r.m.expired, r.m.maxQueued = p, p, expired, r.maxQueued
	for i := 0; i < maxFuzzOps && len(r.data) > 0; i++ {
		r.step(r.next()%opCount, r.next())
	}
	r.finish()
}

// step runs one operation.
func (r *fuzzRun) step(op, arg byte) {
	switch {
	case op < fnKinds:
		r.submit(int(op), arg%4 != 0, arg%4 == 3, arg%8 == 7 && !r.external)
	case op == opNilFunc:
		r.nilFunc(arg%2 == 0)
	case op == opCancel:
		r.cancel(int(arg))
	case op == opOpenGate:
		r.openGate(int(arg))
	case op == opSubmitCo:
		r.submitCo(arg%2 == 0, int(arg/2)%fnKinds)
	case op == opEndCtx:
		r.endCtx(int(arg))
	case op == opSetLimits:
		r.setLimits(int(arg%6)-1, int(r.next()%6)-1)
	case op == opRunCompletions:
		r.runCompletions()
	case op == opClose:
		r.close(int(arg % 3))
	case op == opBatchAdd:
		r.batchAdd(int(arg)%fnKinds, arg/fnKinds%4 != 0, arg/fnKinds%4 == 3)
	case op == opBatchFlush:
		r.batchFlush()
	}
}

// refused checks the error of a request the pool did not accept: ErrClosed
// once Close or Shutdown may have begun (a Func may call them), ErrQueueFull
// before that when the queue is bounded.
func (r *fuzzRun) refused(err error) {
	switch {
	case r.closed:
		require.ErrorIs(r.t, err, threadpool.ErrClosed)
	case errors.Is(err, threadpool.ErrClosed):
		require.True(r.t, r.m.closing.Load(), "refused with ErrClosed before any Close")
	case r.maxQueued:
		require.ErrorIs(r.t, err, threadpool.ErrQueueFull)
	default:
		require.NoError(r.t, err)
	}
}

// submit submits a request of kind; with cbBatch its callback flushes a
// Batch of its own, and with cbClose it then closes the pool (which, on
// the pool's own loop, waits there until the slow Funcs' gates open).
func (r *fuzzRun) submit(kind int, withCb, cbBatch, cbClose bool) {
	q := r.m.newReq(kind, false, withCb)
	q.cbBatch, q.cbClose = cbBatch, cbClose
	var cb threadpool.Callback
	if withCb {
		cb = r.m.cb(q)
	}
	h, err := r.p.Submit(q.fn, cb)
	if err != nil {
		r.refused(err)
		return
	}
	require.False(r.t, r.closed, "accepted after close")
	q.accepted, q.h = true, h
}

// batchAdd records a request in the test's Batch, like submit: nothing is
// submitted yet.
func (r *fuzzRun) batchAdd(kind int, withCb, cbBatch bool) {
	if r.batch == nil {
		r.batch = r.p.NewBatch()
	}
	q := r.m.newReq(kind, false, withCb)
	q.cbBatch = cbBatch
	var cb threadpool.Callback
	if withCb {
		cb = r.m.cb(q)
	}
	require.NoError(r.t, r.batch.Add(q.fn, cb))
	r.batched = append(r.batched, q)
	require.Equal(r.t, len(r.batched), r.batch.Len())
}

// batchFlush flushes the test's Batch: every request it recorded is accepted,
// or none is.
func (r *fuzzRun) batchFlush() {
	if r.batch == nil {
		return
	}
	qs := r.batched
	r.batched = nil
	err := r.batch.Flush()
	require.Zero(r.t, r.batch.Len(), "a flushed Batch is empty")
	if len(qs) == 0 {
		require.NoError(r.t, err, "an empty Batch flushes nothing")
		return
	}
	if err != nil {
		r.refused(err)
		return
	}
	require.False(r.t, r.closed, "batch accepted after close")
	for _, q := range qs {
		q.accepted = true
	}
}

func (r *fuzzRun) nilFunc(co bool) {
	if co {
		require.ErrorIs(r.t, r.p.SubmitCo(context.Background(), nil), threadpool.ErrNilFunc)
		return
	}
	h, err := r.p.Submit(nil, func(error) { r.t.Error("callback of a nil Func") })
	require.ErrorIs(r.t, err, threadpool.ErrNilFunc)
	require.False(r.t, r.p.Cancel(h))
}

func (r *fuzzRun) cancel(i int) {
	i %= len(r.m.reqs) + 1
	if i == len(r.m.reqs) {
		require.False(r.t, r.p.Cancel(threadpool.Handle{}))
		return
	}
	q := r.m.reqs[i]
	wasDone, wasRunning := r.m.delivered(q), q.ran.Load()
	ok := r.p.Cancel(q.h)
	if !ok {
		return
	}
	require.False(r.t, r.closed, "canceled request %d after close", i)
	require.False(r.t, wasDone || wasRunning, "canceled request %d that had started", i)
	q.cancel("the test")
}

func (r *fuzzRun) openGate(i int) {
	var slow []*fuzzReq
	for _, q := range r.m.reqs {
		if q.gate != nil {
			slow = append(slow, q)
		}
	}
	if len(slow) > 0 {
		slow[i%len(slow)].gate.open()
	}
}

func (r *fuzzRun) submitCo(ended bool, kind int) {
	q := r.m.newReq(kind, true, false)
	ctx, cancel := context.WithCancel(context.Background())
	q.cancelCtx = cancel
	if ended {
		q.ctxEnded.Store(true)
		cancel()
		require.ErrorIs(r.t, r.p.SubmitCo(ctx, q.fn), context.Canceled)
		require.False(r.t, q.ran.Load())
		return
	}
	q.res = make(chan error, 1)
	r.co = append(r.co, q)
	r.coWG.Go(func() { q.res <- r.p.SubmitCo(ctx, q.fn) })
}

func (r *fuzzRun) endCtx(i int) {
	if len(r.co) == 0 {
		return
	}
	q := r.co[i%len(r.co)]
	q.ctxEnded.Store(true)
	q.cancelCtx()
}

func (r *fuzzRun) setLimits(min, max int) {
	err := r.p.SetLimits(min, max)
	switch {
	case min < 0 || max <= 0 || min > max:
		require.ErrorIs(r.t, err, threadpool.ErrInvalidLimits)
	case r.closed:
		require.ErrorIs(r.t, err, threadpool.ErrClosed)
	case err != nil:
		require.ErrorIs(r.t, err, threadpool.ErrClosed)
		require.True(r.t, r.m.closing.Load(), "SetLimits refused before any Close")
	}
}

func (r *fuzzRun) runCompletions() {
	before := r.p.Stats().Delivered
	n := r.p.RunCompletions()
	if !r.external || r.released {
		require.Zero(r.t, n)
		return
	}
	require.Equal(r.t, before+uint64(n), r.p.Stats().Delivered)
}

// close runs Close or Shutdown on another goroutine (which takes the loop
// over, with an external loop) while this one lets the slow Funcs finish.
func (r *fuzzRun) close(how int) {
	done := make(chan error, 1)
	expired := r.m.expired
	r.m.closing.Store(true)
	go func() {
		switch how {
		case 0:
			done <- r.p.Close()
		case 1:
			done <- r.p.Shutdown(context.Background())
		default:
			done <- r.p.Shutdown(expired)
		}
	}()
	r.m.openGates()
	err := <-done
	if how == 2 && err != nil {
		// The context ended first: Shutdown returned without waiting for
		// the running Funcs, whose callbacks are still to come.
		require.ErrorIs(r.t, err, context.DeadlineExceeded)
	} else {
		require.NoError(r.t, err)
		r.released = true
	}
	r.closed = true
}

// finish closes the pool, ends every SubmitCo and checks the model.
func (r *fuzzRun) finish() {
	t := r.t
	r.m.openGates()
	r.m.closing.Store(true)
	require.NoError(t, r.p.Close())
	r.closed, r.released = true, true
	if r.batch != nil && r.batch.Len() > 0 {
		r.batchFlush() // refused: ErrClosed
	}
	for _, q := range r.co {
		q.ctxEnded.Store(true)
		q.cancelCtx()
	}
	r.coWG.Wait()
	// helpers counts the Funcs that called Shutdown, which may run a queued
	// fnGoexit request themselves and end with it.
	var ran, panicked, helpers, accepted, ambiguous, callbacks uint64
	for _, q := range r.m.reqs {
		if q.ran.Load() {
			ran++
			switch q.kind {
			case fnPanic, fnGoexit:
				panicked++
			case fnShutdown:
				helpers++
			}
		}
		if q.co {
			if q.res != nil {
				acc, amb, err := q.checkCo(<-q.res, r.maxQueued)
				require.NoError(t, err)
				accepted += b2u(acc)
				ambiguous += b2u(amb)
			}
			continue
		}
		if !q.accepted {
			require.Zero(t, q.calls, "request %d: callback without Submit", q.id)
			continue
		}
		accepted++
		callbacks++
		if q.canceled.Load() {
			require.False(t, q.ran.Load(), "request %d: canceled, yet its Func ran", q.id)
		}
		if q.withCb {
			require.Equal(t, 1, q.calls, "request %d: callbacks", q.id)
			require.NoError(t, q.checkResult(q.err))
		}
	}
	require.Empty(t, r.m.errs)
	inner := r.m.innerAcc.Load()
	require.Equal(t, r.m.innerCbs.Load(), r.m.innerGot.Load(), "callbacks of the requests Funcs submitted")
	ran += uint64(r.m.innerRan.Load())
	accepted += uint64(inner)
	callbacks += uint64(r.m.innerCbs.Load())
	s := r.p.Stats()
	require.GreaterOrEqual(t, s.Canceled, uint64(r.m.innerCanc.Load()))
	require.Equal(t, ran, s.Completed, "every Func that started completed")
	require.GreaterOrEqual(t, s.Panicked, panicked)
	require.LessOrEqual(t, s.Panicked, panicked+helpers)
	require.Equal(t, callbacks, s.Delivered)
	require.Equal(t, s.Submitted, s.Completed+s.Canceled)
	require.GreaterOrEqual(t, s.Submitted, accepted)
	require.LessOrEqual(t, s.Submitted, accepted+ambiguous)
	require.Zero(t, s.Workers+s.Running+s.Queued+s.IdleWorkers)
}

// b2u is 1 for true and 0 for false.
func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// Kinds of Func the pool fuzzer submits. The last six call the pool from
// the Func, on its worker.
const (
	fnQuick    = iota // returns nil
	fnFail            // returns its request's own error
	fnPanic           // panics with its request's number
	fnSlow            // blocks until its gate opens, then returns nil
	fnGoexit          // calls runtime.Goexit
	fnClose           // calls Close and returns its error
	fnShutdown        // calls Shutdown, with an expired context for odd requests
	fnSubmitCo        // SubmitCo of a Func that returns its request's own error
	fnSubmit          // Submit of a quick Func with a callback
	fnCancel          // Cancel of an earlier request
	fnBatch           // Batch of two quick Funcs with callbacks
	fnKinds
)

// fuzzReq is the model of one request the fuzzer tried to submit.
type fuzzReq struct {
	id     int
	kind   int
	co     bool        // through SubmitCo
	fnErr  error       // what a fnFail Func returns
	gate   *gate       // a fnSlow Func's gate
	ran    atomic.Bool // the Func started
	h      threadpool.Handle
	withCb bool
	m      *fuzzModel
	target *fuzzReq // what a fnCancel Func cancels; nil: the zero Handle

	cbBatch bool // the callback flushes a Batch of two quick Funcs
	cbClose bool // the callback then calls Close

	// Written by the test goroutine.
	accepted bool // Submit said yes (for SubmitCo: the result says so)

	canceled atomic.Bool // Cancel returned true, on the test goroutine or in a Func

	// Written by the callback, under fuzzModel.mu.
	calls int
	err   error

	// SubmitCo only: its context, whether the test ended it, and the result.
	cancelCtx context.CancelFunc
	ctxEnded  atomic.Bool
	res       chan error
}

// fuzzModel is what the fuzzer expects of one pool.
type fuzzModel struct {
	p         *threadpool.Pool // for the Funcs that call it
	expired   context.Context  // for Shutdown with an expired context
	maxQueued bool             // the pool refuses requests when 3 wait

	mu   sync.Mutex // guards the callback fields of every request, and errs
	reqs []*fuzzReq // appended by the test goroutine only
	errs []error    // what went wrong inside Funcs and their requests

	// Any goroutine.
	closing   atomic.Bool  // Close or Shutdown is about to be called, or was
	innerRan  atomic.Int64 // Funcs of requests submitted by Funcs that started
	innerAcc  atomic.Int64 // requests submitted by Funcs and accepted
	innerCbs  atomic.Int64 // of those, the ones with a callback (Submit)
	innerGot  atomic.Int64 // callbacks of those that ran
	innerCanc atomic.Int64 // requests submitted by Funcs that Close canceled
}

// newReq adds a request of kind to the model. A fnCancel request cancels the
// request before it, if any.
func (m *fuzzModel) newReq(kind int, co, withCb bool) *fuzzReq {
	r := &fuzzReq{id: len(m.reqs), kind: kind, co: co, withCb: withCb, m: m}
	r.fnErr = fmt.Errorf("request %d failed", r.id)
	if kind == fnSlow {
		r.gate = newGate()
	}
	if kind == fnCancel && len(m.reqs) > 0 {
		r.target = m.reqs[len(m.reqs)-1]
	}
	m.reqs = append(m.reqs, r)
	return r
}

// failed records what went wrong on another goroutine than the test's.
func (m *fuzzModel) failed(format string, args ...any) {
	m.mu.Lock()
	m.errs = append(m.errs, fmt.Errorf(format, args...))
	m.mu.Unlock()
}

// innerResult is what a Func that called the pool returns: the error of that
// call, kept apart from the errors the pool gives the request itself (no
// Unwrap: an inner ErrCanceled does not mean the request was canceled).
type innerResult struct{ err error }

func (e innerResult) Error() string { return fmt.Sprintf("inner call: %v", e.err) }

// fn is the request's Func.
func (r *fuzzReq) fn() error {
	r.ran.Store(true)
	m := r.m
	switch r.kind {
	case fnFail:
		return r.fnErr
	case fnPanic:
		panic(r.id)
	case fnSlow:
		r.gate.wait()
	case fnGoexit:
		runtime.Goexit()
	case fnClose:
		m.closing.Store(true)
		return m.p.Close()
	case fnShutdown:
		m.closing.Store(true)
		if r.id%2 == 1 {
			return m.p.Shutdown(m.expired)
		}
		return m.p.Shutdown(context.Background())
	case fnSubmitCo:
		err := m.p.SubmitCo(context.Background(), func() error {
			m.innerRan.Add(1)
			return r.fnErr
		})
		if err == r.fnErr || errors.Is(err, threadpool.ErrCanceled) {
			m.innerAcc.Add(1)
		}
		if errors.Is(err, threadpool.ErrCanceled) {
			m.innerCanc.Add(1)
		}
		return innerResult{err}
	case fnSubmit:
		_, err := m.p.Submit(func() error { m.innerRan.Add(1); return nil }, func(err error) {
			m.innerGot.Add(1)
			if err != nil && !errors.Is(err, threadpool.ErrCanceled) {
				m.failed("request %d: its Submit's callback got %v", r.id, err)
			}
		})
		if err == nil {
			m.innerAcc.Add(1)
			m.innerCbs.Add(1)
		}
		return innerResult{err}
	case fnBatch:
		return innerResult{m.innerBatch(r)}
	case fnCancel:
		if r.target == nil {
			if m.p.Cancel(threadpool.Handle{}) {
				m.failed("request %d: canceled the zero Handle", r.id)
			}
			return nil
		}
		if m.p.Cancel(r.target.h) {
			r.target.cancel(fmt.Sprintf("request %d's Func", r.id))
		}
	}
	return nil
}

// innerBatch flushes a Batch of two quick Funcs with callbacks, from r's Func
// or Callback, and returns Flush's error.
func (m *fuzzModel) innerBatch(r *fuzzReq) error {
	b := m.p.NewBatch()
	for range 2 {
		err := b.Add(func() error { m.innerRan.Add(1); return nil }, func(err error) {
			m.innerGot.Add(1)
			if err != nil && !errors.Is(err, threadpool.ErrCanceled) {
				m.failed("request %d: its Batch's callback got %v", r.id, err)
			}
		})
		if err != nil {
			m.failed("request %d: Batch.Add: %v", r.id, err)
		}
	}
	err := b.Flush()
	if err == nil {
		m.innerAcc.Add(2)
		m.innerCbs.Add(2)
	}
	if b.Len() != 0 {
		m.failed("request %d: %d requests left in its Batch after Flush", r.id, b.Len())
	}
	return err
}

// cancel records that Cancel returned true for r. Any goroutine.
func (r *fuzzReq) cancel(by string) {
	if !r.accepted || r.co {
		r.m.failed("%s canceled request %d that was never queued", by, r.id)
	}
	if r.canceled.Swap(true) {
		r.m.failed("%s canceled request %d twice", by, r.id)
	}
}

// cb is the request's Callback.
func (m *fuzzModel) cb(r *fuzzReq) threadpool.Callback {
	return func(err error) {
		m.mu.Lock()
		r.calls++
		r.err = err
		m.mu.Unlock()
		if r.cbBatch {
			switch err := m.innerBatch(r); {
			case err == nil:
			case errors.Is(err, threadpool.ErrClosed) && m.closing.Load():
			case errors.Is(err, threadpool.ErrQueueFull) && m.maxQueued:
			default:
				m.failed("request %d: its callback's Batch.Flush returned %v", r.id, err)
			}
		}
		if r.cbClose {
			m.closing.Store(true)
			if err := m.p.Close(); err != nil {
				m.failed("request %d: Close in its callback returned %v", r.id, err)
			}
		}
	}
}

// delivered reports whether r's callback has run.
func (m *fuzzModel) delivered(r *fuzzReq) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return r.calls > 0
}

// openGates lets every slow Func finish.
func (m *fuzzModel) openGates() {
	for _, r := range m.reqs {
		if r.gate != nil {
			r.gate.open()
		}
	}
}

// checkResult checks the error a request finished with against its kind.
func (r *fuzzReq) checkResult(err error) error {
	if errors.Is(err, threadpool.ErrCanceled) {
		if r.ran.Load() {
			return fmt.Errorf("request %d: canceled, yet its Func ran", r.id)
		}
		return nil
	}
	if r.canceled.Load() {
		return fmt.Errorf("request %d: Cancel returned true, yet it got %v", r.id, err)
	}
	if !r.ran.Load() {
		return fmt.Errorf("request %d: got %v, yet its Func never ran", r.id, err)
	}
	var pe *threadpool.PanicError
	var inner innerResult
	switch r.kind {
	case fnShutdown:
		switch {
		case err == nil, r.id%2 == 1 && errors.Is(err, context.DeadlineExceeded):
		case errors.As(err, &pe) && errors.Is(err, threadpool.ErrGoexit):
			// Shutdown ran a queued fnGoexit request on this Func's worker.
		default:
			return fmt.Errorf("request %d: Shutdown in its Func returned %v", r.id, err)
		}
	case fnSubmitCo, fnSubmit, fnBatch:
		if !errors.As(err, &inner) {
			return fmt.Errorf("request %d: got %v, want the result of its inner call", r.id, err)
		}
		switch e := inner.err; {
		case e == nil && (r.kind == fnSubmit || r.kind == fnBatch), e == r.fnErr && r.kind == fnSubmitCo:
		case errors.Is(e, threadpool.ErrClosed) && r.m.closing.Load():
		case errors.Is(e, threadpool.ErrQueueFull) && r.m.maxQueued:
		case errors.Is(e, threadpool.ErrCanceled) && r.kind == fnSubmitCo:
		default:
			return fmt.Errorf("request %d: its inner call returned %v", r.id, e)
		}
	case fnFail:
		if err != r.fnErr {
			return fmt.Errorf("request %d: got %v, want its own error", r.id, err)
		}
	case fnPanic:
		if !errors.As(err, &pe) || pe.Value != r.id {
			return fmt.Errorf("request %d: got %v, want a *PanicError of %d", r.id, err, r.id)
		}
	case fnGoexit:
		if !errors.As(err, &pe) || !errors.Is(err, threadpool.ErrGoexit) {
			return fmt.Errorf("request %d: got %v, want a *PanicError of ErrGoexit", r.id, err)
		}
	default:
		if err != nil {
			return fmt.Errorf("request %d: got %v, want nil", r.id, err)
		}
	}
	return nil
}

// checkCo checks a SubmitCo result and reports whether the request was
// accepted, or ambiguous when it cannot tell (the context ended before
// SubmitCo may have queued it).
func (r *fuzzReq) checkCo(err error, maxQueued bool) (accepted, ambiguous bool, _ error) {
	switch {
	case errors.Is(err, threadpool.ErrClosed), maxQueued && errors.Is(err, threadpool.ErrQueueFull):
		if r.ran.Load() {
			return false, false, fmt.Errorf("co %d: refused with %v, yet its Func ran", r.id, err)
		}
		return false, false, nil
	case err == context.Canceled:
		if !r.ctxEnded.Load() {
			return false, false, fmt.Errorf("co %d: context error, yet the context never ended", r.id)
		}
		return r.ran.Load(), !r.ran.Load(), nil
	}
	return true, false, r.checkResult(err)
}
