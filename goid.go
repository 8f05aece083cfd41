package threadpool

import "runtime"

// goidBufs keeps the buffers curGoroutineID hands to runtime.Stack, which
// makes its argument escape: reusing them keeps the lookup allocation-free.
var goidBufs = make(chan *[64]byte, 16)

// curGoroutineID returns the calling goroutine's id, parsed from the header of
// its stack trace ("goroutine 123 [running]:"). It costs a couple of
// microseconds, so it is kept off the request path: a worker takes its id
// once when it starts, and the pool looks the caller up only in Close,
// Shutdown, a SubmitCo that found no free worker or whose worker left before
// it ran the request, and race builds' checks.
func curGoroutineID() uint64 {
	var buf *[64]byte
	select {
	case buf = <-goidBufs:
	default:
		buf = new([64]byte)
	}
	n := runtime.Stack(buf[:], false)
	const prefix = "goroutine "
	var id uint64
	for _, c := range buf[len(prefix):n] {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + uint64(c-'0')
	}
	select {
	case goidBufs <- buf:
	default:
	}
	return id
}
