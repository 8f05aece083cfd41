package threadpool

import (
	"errors"
	"math"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// The reaper enforces the idle timeout: one goroutine per pool that, every
// idle timeout, retires the workers that stayed idle since its previous pass
// while more than min are alive. A worker therefore exits between one and
// two idle timeouts after it went idle.
//
// It waits in poll(2) on the read end of a pipe of its own, a blocking system
// call, rather than on a Go timer: a pending Go timer makes every scheduling
// decision of the P whose heap holds it read the clock, which cost 15% of a
// lone request's round trip with one timer per worker. A blocked system call
// holds an OS thread but no P. Nothing is ever written to the pipe: Close
// stops the reaper by closing a channel and then the pipe's write end, which
// makes the read end report a hang-up to the poll(2) in progress; no write
// can fail on the way. Should the read end break (a double close elsewhere in
// the program, say), the reaper sees an event nobody sent, or finds before a
// poll(2) that the descriptor's number names another file (which the hang-up
// would not reach), and waits on a Go timer from then on, so that idle
// workers are still retired and Close, which it then waits for on the
// channel, returns at once. A poll(2) in progress holds the pipe itself, so
// the hang-up ends it whatever becomes of the number meanwhile.

// startReaper starts the reaper. New, before the pool is shared.
func (p *Pool) startReaper() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	rc, err := r.SyscallConn()
	if err == nil {
		// Not File.Fd: that would put the descriptor back in blocking mode.
		err = rc.Control(func(fd uintptr) { p.reaperFd = int(fd) })
	}
	if err == nil {
		p.reaperFile, err = fileID(p.reaperFd)
	}
	if err != nil {
		r.Close()
		w.Close()
		return err
	}
	p.reaperR, p.reaperW = r, w
	p.reaperQuit = make(chan struct{})
	p.reaperDone = make(chan struct{})
	go p.reap()
	return nil
}

// stopReaper ends the reaper and waits for it. Close, after every worker has
// exited; any number of times.
func (p *Pool) stopReaper() {
	p.reaperOnce.Do(func() {
		close(p.reaperQuit)
		p.reaperW.Close() // wakes the poll(2) in progress: POLLHUP
		<-p.reaperDone
		p.reaperR.Close()
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
	fds := []unix.PollFd{{Fd: int32(p.reaperFd), Events: unix.POLLIN}}
	for {
		switch p.reapWait(fds) {
		case reapStop:
			return
		case reapBroken:
			p.reapOnTimer()
			return
		}
		p.reapIdle()
	}
}

// reapEvent is what ended a wait of the reaper.
type reapEvent int

const (
	reapPass   reapEvent = iota // an idle timeout went by: make the next pass
	reapStop                    // Close asked the reaper to stop
	reapBroken                  // the descriptor broke: wait on a timer instead
)

// reapWait waits one idle timeout in poll(2) on fds, the read end of the
// reaper's pipe, and reports what ended the wait. A signal that interrupts
// the poll (EINTR) does not end the wait early, nor does the cap of poll(2)'s
// timeout (about 24.8 days) end a longer one: the reaper polls again for the
// rest of the timeout, so that two passes are always at least an idle
// timeout apart and no worker is retired after a shorter idle stretch. The
// reaper reads the clock when it starts to wait and each time a poll returns,
// never on a request's path.
func (p *Pool) reapWait(fds []unix.PollFd) reapEvent {
	deadline := time.Now().Add(p.idleTimeout)
	timeout := pollTimeout(p.idleTimeout)
	for {
		if id, err := fileID(p.reaperFd); err != nil || id != p.reaperFile {
			// The number names another file, which Close's hang-up
			// would not reach: the descriptor broke.
			return reapBroken
		}
		_, err := unix.Poll(fds, timeout)
		if p.reaperStopping() {
			return reapStop
		}
		if fds[0].Revents != 0 || (err != nil && !errors.Is(err, unix.EINTR)) {
			// Nothing is written to the pipe and its write end is
			// open: the descriptor broke. Polling it again would spin.
			return reapBroken
		}
		// Timed out, or interrupted: a poll(2) timeout is capped at about
		// 24.8 days, so a longer idle timeout takes several.
		left := time.Until(deadline)
		if left <= 0 {
			return reapPass
		}
		timeout = pollTimeout(left)
	}
}

// fileID returns what identifies the file that descriptor fd names.
func fileID(fd int) ([2]uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return [2]uint64{}, err
	}
	return [2]uint64{uint64(st.Dev), uint64(st.Ino)}, nil
}

// reaperStopping reports whether Close asked the reaper to stop.
func (p *Pool) reaperStopping() bool {
	select {
	case <-p.reaperQuit:
		return true
	default:
		return false
	}
}

// reapOnTimer is the reaper once its descriptor broke: it makes its passes
// an idle timeout apart on a Go timer until Close asks it to stop.
func (p *Pool) reapOnTimer() {
	t := time.NewTimer(p.idleTimeout)
	defer t.Stop()
	for {
		select {
		case <-p.reaperQuit:
			return
		case <-t.C:
		}
		p.reapIdle()
		t.Reset(p.idleTimeout)
	}
}

// reapIdle retires the idle workers above min that took no request since
// the previous pass, and notes the others' counts for the next one.
func (p *Pool) reapIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	kept := p.idle[:0]
	for _, w := range p.idle {
		if w.taken == w.takenAtPass && p.live() > p.minWorkers {
			w.retired = true
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
