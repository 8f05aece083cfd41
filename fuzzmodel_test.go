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

// Kinds of Func the pool fuzzer submits.
const (
	fnQuick  = iota // returns nil
	fnFail          // returns its request's own error
	fnPanic         // panics with its request's number
	fnSlow          // blocks until its gate opens, then returns nil
	fnGoexit        // calls runtime.Goexit
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

	// Written by the test goroutine.
	accepted bool // Submit said yes (for SubmitCo: the result says so)
	canceled bool // Cancel returned true

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
	mu   sync.Mutex // guards the callback fields of every request
	reqs []*fuzzReq
}

// newReq adds a request of kind to the model.
func (m *fuzzModel) newReq(kind int, co, withCb bool) *fuzzReq {
	r := &fuzzReq{id: len(m.reqs), kind: kind, co: co, withCb: withCb}
	r.fnErr = fmt.Errorf("request %d failed", r.id)
	if kind == fnSlow {
		r.gate = newGate()
	}
	m.reqs = append(m.reqs, r)
	return r
}

// fn is the request's Func.
func (r *fuzzReq) fn() error {
	r.ran.Store(true)
	switch r.kind {
	case fnFail:
		return r.fnErr
	case fnPanic:
		panic(r.id)
	case fnSlow:
		r.gate.wait()
	case fnGoexit:
		runtime.Goexit()
	}
	return nil
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
	if r.canceled {
		return fmt.Errorf("request %d: Cancel returned true, yet it got %v", r.id, err)
	}
	if !r.ran.Load() {
		return fmt.Errorf("request %d: got %v, yet its Func never ran", r.id, err)
	}
	var pe *threadpool.PanicError
	switch r.kind {
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
