package threadpool_test

import (
	"context"
	"errors"
	"sync"
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
		r.submit(int(op), arg%4 != 0)
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

func (r *fuzzRun) submit(kind int, withCb bool) {
	q := r.m.newReq(kind, false, withCb)
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
