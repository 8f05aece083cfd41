package randread

import "sync/atomic"

// usedList is a job's used ring, reduced to what the model needs: the
// completion loop pushes finished requests, the job takes them all at once.
// It is a lock-free stack linked through request.next, so pushing and taking
// cost one atomic operation each and allocate nothing. Pushers may be many;
// the taker is the job goroutine alone.
type usedList struct {
	head atomic.Pointer[request]
}

// push adds r. r.next is written before the CAS that publishes r.
func (u *usedList) push(r *request) {
	for {
		old := u.head.Load()
		r.next = old
		if u.head.CompareAndSwap(old, r) {
			return
		}
	}
}

// take removes and returns every pushed request, newest first, linked through
// next. Job goroutine only.
func (u *usedList) take() *request { return u.head.Swap(nil) }
