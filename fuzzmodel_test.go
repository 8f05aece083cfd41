package threadpool_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/batchio/threadpool"
)

// Kinds of Func the pool fuzzer submits. The last five call the pool from
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
	case fnSubmitCo, fnSubmit:
		if !errors.As(err, &inner) {
			return fmt.Errorf("request %d: got %v, want the result of its inner call", r.id, err)
		}
		switch e := inner.err; {
		case e == nil && r.kind == fnSubmit, e == r.fnErr && r.kind == fnSubmitCo:
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
