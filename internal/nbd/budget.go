package nbd

import "sync"

// budget bounds what one connection holds between reading a request and
// writing its reply: a number of requests and a number of payload bytes.
// The reader goroutine takes from it before reading a payload; whoever
// writes or discards the reply gives it back. It is what keeps a client
// that sends without reading from growing the server's memory.
type budget struct {
	mu       sync.Mutex
	cond     sync.Cond // signalled when something is given back or on close; uses mu
	reqs     int       // requests held; guarded by mu
	bytes    int64     // payload bytes held; guarded by mu
	maxReqs  int       // set before use, then read-only
	maxBytes int64     // set before use, then read-only
	closed   bool      // guarded by mu; acquire fails once set
}

// grant is an amount of budget travelling with replies.
type grant struct {
	reqs  int
	bytes int64
}

func (g *grant) add(o grant) {
	g.reqs += o.reqs
	g.bytes += o.bytes
}

func (b *budget) init(maxReqs int, maxBytes int64) {
	b.cond.L = &b.mu
	b.maxReqs = maxReqs
	b.maxBytes = maxBytes
}

// acquire takes one request and n bytes, waiting while the budget is
// spent. A request larger than the whole byte budget proceeds when nothing
// else is held. It reports false, taking nothing, once the budget is
// closed; held is how many earlier requests were still held, that is,
// whose replies had not been sent (or dropped).
func (b *budget) acquire(n int64) (ok bool, held int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for !b.closed && b.spent(grant{b.reqs, b.bytes}, n) {
		b.cond.Wait()
	}
	if b.closed {
		return false, 0
	}
	held = b.reqs
	b.reqs++
	b.bytes += n
	return true, held
}

// force takes one request and no bytes at once, past the bounds and after
// close: for a reply that must be sent anyway (see conn.refuseStopping).
func (b *budget) force() {
	b.mu.Lock()
	b.reqs++
	b.mu.Unlock()
}

// spent reports whether one more request of n bytes must wait while held
// is held: acquire waits while it is true of what the connection holds, and
// a holder that would make acquire wait for itself gives its share back
// first.
func (b *budget) spent(held grant, n int64) bool {
	return held.reqs >= b.maxReqs || (held.reqs > 0 && held.bytes+n > b.maxBytes)
}

// idle reports whether nothing is held: every request taken has had its
// reply sent or dropped.
func (b *budget) idle() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reqs == 0
}

// release gives g back.
func (b *budget) release(g grant) {
	if g.reqs == 0 && g.bytes == 0 {
		return
	}
	b.mu.Lock()
	b.reqs -= g.reqs
	b.bytes -= g.bytes
	b.mu.Unlock()
	b.cond.Broadcast()
}

// close makes waiting and later acquires fail.
func (b *budget) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cond.Broadcast()
}

// drain waits until every request taken has been given back.
func (b *budget) drain() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.reqs > 0 {
		b.cond.Wait()
	}
}
