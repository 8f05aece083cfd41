package threadpool

import "runtime"

// curGoroutineID returns the calling goroutine's id, parsed from the header of
// its stack trace ("goroutine 123 [running]:"). It is used only to recognise
// the completion goroutine when Close or Shutdown is called from a Callback,
// never on a hot path.
func curGoroutineID() uint64 {
	var buf [64]byte
	n := runtime.Stack(buf[:], false)
	const prefix = "goroutine "
	var id uint64
	for _, c := range buf[len(prefix):n] {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + uint64(c-'0')
	}
	return id
}
