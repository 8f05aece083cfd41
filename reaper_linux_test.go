package threadpool

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// pollingThreads returns the threads of this process blocked in poll(2)
// (ppoll, as unix.Poll calls it) on a single descriptor: the reaper's, while
// the test runs nothing else that polls so.
func pollingThreads(t *testing.T) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	require.NoError(t, err)
	var tids []int
	for _, e := range ents {
		b, err := os.ReadFile("/proc/self/task/" + e.Name() + "/syscall")
		if err != nil {
			continue // the thread has exited
		}
		// "number arg1 arg2 ...": ppoll(fds, nfds, ...) with nfds 1. A
		// thread that runs, or runs a signal handler, reads "running".
		f := strings.Fields(string(b))
		if len(f) > 2 && f[0] == strconv.Itoa(unix.SYS_PPOLL) && f[2] == "0x1" {
			tid, err := strconv.Atoi(e.Name())
			require.NoError(t, err)
			tids = append(tids, tid)
		}
	}
	return tids
}

// signalPending reports whether thread tid has a signal of its own pending.
func signalPending(t *testing.T, tid int) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/task/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return false // the thread has exited: nothing is pending on it
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "SigPnd:"); ok {
			return strings.Trim(strings.TrimSpace(v), "0") != ""
		}
	}
	t.Fatalf("no SigPnd in the status of thread %d", tid)
	return false
}

// interruptReaper sends a signal to the thread on which the reaper waits in
// poll(2), which fails with EINTR, and returns once the reaper has taken it
// and waits in poll(2) again.
func interruptReaper(t *testing.T) {
	t.Helper()
	var tids []int
	require.Eventually(t, func() bool {
		tids = pollingThreads(t)
		return len(tids) == 1
	}, 30*time.Second, time.Millisecond, "the reaper must wait in poll(2)")
	// SIGURG is the runtime's own preemption signal: its handler does
	// nothing to a goroutine in a system call.
	require.NoError(t, unix.Tgkill(os.Getpid(), tids[0], unix.SIGURG))
	require.Eventually(t, func() bool {
		return !signalPending(t, tids[0]) && len(pollingThreads(t)) == 1
	}, 30*time.Second, time.Millisecond, "the reaper must take the signal and poll again")
}

// TestReaperSignalDoesNotShortenIdleTimeout interrupts the reaper's poll(2)
// with signals, as any signal sent to the process may land on its thread: the
// idle worker must not be retired before its idle timeout, which is an hour.
// Each interruption used to count as a whole pass, so the second one retired
// a worker idle for a few milliseconds.
func TestReaperSignalDoesNotShortenIdleTimeout(t *testing.T) {
	p := newPool(t, WithIdleTimeout(time.Hour))
	require.NoError(t, p.SubmitCo(t.Context(), func() error { return nil }))
	eventually(t, func() bool { return p.Stats().IdleWorkers == 1 }, "the worker must go idle")
	for range 3 {
		interruptReaper(t)
	}
	s := p.Stats()
	require.Equal(t, 1, s.Workers, "an idle worker retired long before its idle timeout")
	require.Equal(t, 1, s.IdleWorkers)
}

// reaperFd returns the descriptor on which p's reaper waits in poll(2).
func reaperFd(p *Pool) int { return p.reaperFd }

// breakReaperFd puts /dev/null in place of the descriptor on which p's
// reaper waits, as a double close elsewhere in the program followed by an
// open would: a reaper in poll(2) goes on waiting on the file it had, and its
// next poll(2) finds /dev/null, always readable.
func breakReaperFd(t *testing.T, p *Pool) {
	t.Helper()
	null, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer null.Close()
	require.NoError(t, unix.Dup3(int(null.Fd()), reaperFd(p), unix.O_CLOEXEC))
}

// waitReaperPolling returns once the reaper waits in poll(2).
func waitReaperPolling(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool { return len(pollingThreads(t)) == 1 },
		30*time.Second, time.Millisecond, "the reaper must wait in poll(2)")
}

// TestCloseDoesNotWaitForReaperWithBrokenDescriptor breaks the reaper's
// descriptor while it waits in poll(2) for an idle timeout of an hour:
// Close must still stop it at once. Close used to stop it with a write to
// its descriptor alone, which a broken descriptor never delivers, and so
// waited out the idle timeout.
func TestCloseDoesNotWaitForReaperWithBrokenDescriptor(t *testing.T) {
	p, err := New(WithIdleTimeout(time.Hour))
	require.NoError(t, err)
	waitReaperPolling(t)
	breakReaperFd(t, p)
	requireCloseSoon(t, p)
}

// TestReaperOutlivesBrokenDescriptor breaks the reaper's descriptor: idle
// workers above min must still be retired. The reaper used to take the first
// failed wait for the end of the pool and exit, so that no idle worker was
// ever retired again.
func TestReaperOutlivesBrokenDescriptor(t *testing.T) {
	p := newPool(t, WithMinWorkers(1), WithMaxWorkers(1), WithIdleTimeout(time.Millisecond))
	eventually(t, func() bool { return p.Stats().IdleWorkers == 1 }, "the worker must go idle")
	waitReaperPolling(t)
	breakReaperFd(t, p)
	// The reaper has found its descriptor broken once it waits on its timer
	// or has exited; a reaper between two polls is still in reap.
	eventually(t, func() bool {
		return reaperOnTimer() || !strings.Contains(allStacks(), "threadpool.(*Pool).reap(")
	}, "the reaper must find its descriptor broken")
	require.NoError(t, p.SetLimits(0, 1))
	eventually(t, func() bool { return p.Stats().Workers == 0 }, "an idle worker above min must be retired")
}

// TestCloseDoesNotWaitForReaperOnQuietDescriptor puts the read end of
// another pipe, which never becomes readable, in place of the reaper's
// descriptor, as a double close elsewhere in the program followed by a
// pipe(2) would, and interrupts the reaper's poll(2) so that it waits
// again: Close must still stop it at once. The reaper used to poll the other
// pipe, which neither Close's hang-up nor anything else ends, for the rest of
// its idle timeout of an hour, and Close waited for it. Close starts only
// once the reaper waits again, in poll(2) or on its timer: a Close that came
// before the interrupted reaper looked at its descriptor again would stop it
// whatever it then did.
func TestCloseDoesNotWaitForReaperOnQuietDescriptor(t *testing.T) {
	p, err := New(WithIdleTimeout(time.Hour))
	require.NoError(t, err)
	var quiet [2]int
	require.NoError(t, unix.Pipe2(quiet[:], unix.O_CLOEXEC))
	defer unix.Close(quiet[0])
	defer unix.Close(quiet[1])
	var tids []int
	require.Eventually(t, func() bool {
		tids = pollingThreads(t)
		return len(tids) == 1
	}, 30*time.Second, time.Millisecond, "the reaper must wait in poll(2)")
	require.NoError(t, unix.Dup3(quiet[0], reaperFd(p), unix.O_CLOEXEC))
	require.NoError(t, unix.Tgkill(os.Getpid(), tids[0], unix.SIGURG))
	require.Eventually(t, func() bool {
		return !signalPending(t, tids[0]) && (len(pollingThreads(t)) == 1 || reaperOnTimer())
	}, 30*time.Second, time.Millisecond, "the reaper must take the signal and wait again")
	requireCloseSoon(t, p)
}

// reaperOnTimer reports whether a reaper waits on its Go timer, as it does
// once it found its descriptor broken.
func reaperOnTimer() bool {
	return strings.Contains(allStacks(), "threadpool.(*Pool).reapOnTimer(")
}

// allStacks returns the stacks of every goroutine.
func allStacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// requireCloseSoon fails t unless p.Close returns, without error, well
// before the reaper's idle timeout of an hour.
func requireCloseSoon(t *testing.T, p *Pool) {
	t.Helper()
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("Close waits for the reaper's idle timeout")
	}
}
