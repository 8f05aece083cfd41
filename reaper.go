package threadpool

import (
	"errors"
	"math"
	"time"

	"golang.org/x/sys/unix"
)

// The reaper enforces the idle timeout: one goroutine per pool that, every
// idle timeout, retires the workers that stayed idle since its previous pass
// while more than min are alive. A worker therefore exits between one and
// two idle timeouts after it went idle.
//
// It waits in poll(2) on a Notifier's descriptor, a blocking system call,
// rather than on a Go timer: a pending Go timer makes every scheduling
// decision of the P whose heap holds it read the clock, which cost 15% of a
// lone request's round trip with one timer per worker. A blocked system call
// holds an OS thread but no P. Close wakes it through the Notifier.

// startReaper starts the reaper. New, before the pool is shared.
func (p *Pool) startReaper() error {
	n, err := NewNotifier()
	if err != nil {
		return err
	}
	p.reaperStop = n
	p.reaperDone = make(chan struct{})
	go p.reap()
	return nil
}

// stopReaper ends the reaper and waits for it. Close, after every worker has
// exited; any number of times.
func (p *Pool) stopReaper() {
	p.reaperOnce.Do(func() {
		p.reaperStop.Notify()
		<-p.reaperDone
		p.reaperStop.Close()
	})
	<-p.reaperDone
}

// pollTimeout is the idle timeout in poll(2)'s milliseconds: at least one,
// so that a tiny timeout cannot make the reaper spin.
func pollTimeout(d time.Duration) int {
	ms := d / time.Millisecond
	if d%time.Millisecond != 0 {
		ms++
	}
	return int(min(max(ms, 1), math.MaxInt32))
}

// reap is the reaper goroutine.
func (p *Pool) reap() {
	defer close(p.reaperDone)
	fds := []unix.PollFd{{Fd: int32(p.reaperStop.Fd()), Events: unix.POLLIN}}
	for p.reapWait(fds) {
		p.reapIdle()
	}
}

// reapWait waits one idle timeout in poll(2) on fds, the reaper's stop
// descriptor, and reports whether the reaper is to make its next pass: false
// when Close asked it to stop or the descriptor broke. A signal that
// interrupts the poll (EINTR) does not end the wait early, nor does the cap
// of poll(2)'s timeout (about 24.8 days) end a longer one: the reaper polls
// again for the rest of the timeout, so that two passes are always at least
// an idle timeout apart and no worker is retired after a shorter idle
// stretch. The reaper reads the clock when it starts to wait and each time
// a poll returns, never on a request's path.
func (p *Pool) reapWait(fds []unix.PollFd) bool {
	deadline := time.Now().Add(p.idleTimeout)
	timeout := pollTimeout(p.idleTimeout)
	for {
		_, err := unix.Poll(fds, timeout)
		if fds[0].Revents != 0 || p.reaperStop.Missed() {
			return false // Close asked (a failed stop write shows as Missed)
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return false // a broken descriptor: stop retiring rather than spin
		}
		// Timed out, or interrupted: a poll(2) timeout is capped at about
		// 24.8 days, so a longer idle timeout takes several.
		left := time.Until(deadline)
		if left <= 0 {
			return true
		}
		timeout = pollTimeout(left)
	}
}

// reapIdle retires the idle workers above min that took no request since
// the previous pass, and notes the others' counts for the next one.
func (p *Pool) reapIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	kept := p.idle[:0]
	for _, w := range p.idle {
		if w.taken == w.takenAtPass && p.workers > p.minWorkers {
			w.reaped = true
			p.workers--
			w.wake <- struct{}{}
			continue
		}
		w.takenAtPass = w.taken
		kept = append(kept, w)
	}
	clear(p.idle[len(kept):])
	p.idle = kept
}
