package randread

import (
	"context"
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/batchio/threadpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// dataFile makes a data file of size bytes and opens it.
func dataFile(t *testing.T, size int64) *os.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data")
	created, err := PrepareFile(path, size)
	require.NoError(t, err)
	require.True(t, created)
	f, err := os.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

func TestRunEveryDesignAndMode(t *testing.T) {
	f := dataFile(t, 256<<10)
	for _, d := range Designs {
		for _, m := range Modes {
			t.Run(d.String()+"/"+m.String(), func(t *testing.T) {
				w, err := New(Config{File: f, Size: 256 << 10, BS: 4096, IODepth: 4, NumJobs: 3, Mode: m, Design: d})
				require.NoError(t, err)
				defer w.Close()
				for range 2 { // a workload runs again and again
					r, err := w.Run(1000)
					require.NoError(t, err)
					require.Equal(t, uint64(1000), r.IOs)
					require.Equal(t, uint64(1000), r.Latency.Count())
					require.Positive(t, r.IOPS())
					require.Positive(t, r.IRQWrites)
					if m == Each {
						// One write per completion; the count, taken as the
						// jobs finish, may miss each job's last write.
						require.InDelta(t, r.IOs, r.IRQWrites, 3, "one write per completion")
					}
				}
				require.Equal(t, uint64(2000), w.Progress())
			})
		}
	}
}

func TestRunForStops(t *testing.T) {
	f := dataFile(t, 64<<10)
	w, err := New(Config{File: f, Size: 64 << 10, BS: 4096, IODepth: 8, NumJobs: 2, Mode: Defer})
	require.NoError(t, err)
	defer w.Close()
	r, err := w.RunFor(20 * time.Millisecond)
	require.NoError(t, err)
	require.Positive(t, r.IOs)
	require.Equal(t, r.IOs, r.Latency.Count())
}

func TestShortReadFailsTheRun(t *testing.T) {
	f := dataFile(t, 8<<10)
	// Size claims more than the file holds: reads past 8 KiB come back short.
	w, err := New(Config{File: f, Size: 1 << 20, BS: 4096, IODepth: 4, NumJobs: 2, Mode: Coalesce})
	require.NoError(t, err)
	defer w.Close()
	_, err = w.Run(10000)
	require.ErrorIs(t, err, ErrShortRead)
}

func TestConfigRejected(t *testing.T) {
	f := dataFile(t, 8<<10)
	good := Config{File: f, Size: 8 << 10, BS: 4096, IODepth: 1, NumJobs: 1}
	for name, mut := range map[string]func(*Config){
		"no file":    func(c *Config) { c.File = nil },
		"zero bs":    func(c *Config) { c.BS = 0 },
		"small size": func(c *Config) { c.Size = 100 },
		"no depth":   func(c *Config) { c.IODepth = 0 },
		"no jobs":    func(c *Config) { c.NumJobs = 0 },
		"mode":       func(c *Config) { c.Mode = 7 },
		"design":     func(c *Config) { c.Design = -1 },
	} {
		c := good
		mut(&c)
		_, err := New(c)
		require.Error(t, err, name)
	}
}

func TestPrepareFileKeepsALongEnoughFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data")
	require.NoError(t, os.WriteFile(path, make([]byte, 16<<10), 0o644))
	created, err := PrepareFile(path, 8<<10)
	require.NoError(t, err)
	require.False(t, created)
	_, err = PrepareFile(t.TempDir(), 1)
	require.Error(t, err, "a directory is refused")
}

// An existing file shorter than the size asked for may hold someone's
// data: it is refused, with an error that says what to do, and left as it
// was. PrepareFile used to rewrite it with random bytes.
func TestPrepareFileLeavesAShortFileAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notes.txt")
	require.NoError(t, os.WriteFile(path, []byte("precious"), 0o644))
	created, err := PrepareFile(path, 8<<10)
	require.EqualError(t, err, path+" holds 8 bytes, fewer than the 8192 to read: it is left alone; remove it to have it made, or read fewer bytes")
	require.False(t, created)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "precious", string(b))
}

func TestModeNames(t *testing.T) {
	for _, m := range Modes {
		got, err := ParseMode(m.String())
		require.NoError(t, err)
		require.Equal(t, m, got)
	}
	_, err := ParseMode("always")
	require.Error(t, err)
	require.Equal(t, "Mode(9)", Mode(9).String())
	require.Equal(t, "chanpool", ChanPool.String())
	for _, d := range Designs {
		got, err := ParseDesign(d.String())
		require.NoError(t, err)
		require.Equal(t, d, got)
	}
	_, err = ParseDesign("ceiling")
	require.Error(t, err, "the ceiling is not a Design")
	require.Equal(t, "Design(9)", Design(9).String())
}

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	require.Zero(t, h.Quantile(0.5))
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	h.Record(-1)
	require.Equal(t, uint64(1001), h.Count())
	within := func(got, want time.Duration) {
		require.InEpsilon(t, float64(want), float64(got), 1.0/8, "got %v want %v", got, want)
	}
	within(h.Quantile(0.5), 500*time.Microsecond)
	within(h.Quantile(0.99), 990*time.Microsecond)
	var sum Histogram
	sum.Merge(&h)
	sum.Merge(&h)
	require.Equal(t, 2*h.Count(), sum.Count())
	within(sum.Quantile(0.5), 500*time.Microsecond)
	for v := uint64(0); v < 1<<12; v++ {
		b := bucketOf(v)
		require.LessOrEqual(t, bucketMid(b), v+v/8+1, v)
		require.GreaterOrEqual(t, bucketMid(b)+bucketMid(b)/8+1, v, v)
	}
}

// A quantile is a duration at or below which at least the fraction q of the
// recorded durations fall: the p99 of 150 reads of which 2 took 1ms is 1ms,
// since 148 of 150 (98.7%) is less than 99%. The rank was taken as
// floor(q*(n-1))+1, which for such counts fell one short and returned the
// bucket below.
func TestHistogramQuantileCoversTheFraction(t *testing.T) {
	for _, c := range []struct {
		fast, slow int
		q          float64
		want       time.Duration
	}{
		{1, 1, 0.99, time.Millisecond},
		{148, 2, 0.99, time.Millisecond},
		{149, 1, 0.99, time.Microsecond}, // 149 of 150 is 99.3%
		{99, 1, 0.99, time.Microsecond},  // 99 of 100 is 99% exactly
		{1, 1, 0.5, time.Microsecond},
		{1, 2, 0.5, time.Millisecond},
		{3, 1, 0, time.Microsecond},
		{3, 1, 1, time.Millisecond},
	} {
		var h Histogram
		for range c.fast {
			h.Record(time.Microsecond)
		}
		for range c.slow {
			h.Record(time.Millisecond)
		}
		got := h.Quantile(c.q)
		require.InEpsilon(t, float64(c.want), float64(got), 1.0/8,
			"q=%v of %d at 1us and %d at 1ms: got %v", c.q, c.fast, c.slow, got)
	}
}

func TestUsedListConcurrentPushes(t *testing.T) {
	var u usedList
	reqs := make([]request, 400)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < len(reqs); i += 4 {
				u.push(&reqs[i])
			}
		})
	}
	seen := 0
	for seen < len(reqs) {
		for r := u.take(); r != nil; r = r.next {
			seen++
		}
	}
	wg.Wait()
	require.Equal(t, len(reqs), seen)
	require.Nil(t, u.take())
}

// smallRunners returns a workload of n jobs at iodepth 2 and a ceiling of n
// threads, both on one 64 KiB data file, closed when the test ends.
func smallRunners(t *testing.T, n int) (*Workload, *Ceiling) {
	t.Helper()
	f := dataFile(t, 64<<10)
	w, err := New(Config{File: f, Size: 64 << 10, BS: 4096, IODepth: 2, NumJobs: n, Mode: Defer})
	require.NoError(t, err)
	t.Cleanup(w.Close)
	c, err := NewCeiling(CeilingConfig{File: f, Size: 64 << 10, BS: 4096, Threads: n})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return w, c
}

// A RunFor so short that its time is up before its readers start still
// ends: the stop it sets is not undone by the run's start.
func TestRunForShorterThanItsStart(t *testing.T) {
	w, c := smallRunners(t, 1)
	for range 200 {
		_, err := w.RunFor(0)
		require.NoError(t, err)
		_, err = c.RunFor(0)
		require.NoError(t, err)
	}
}

// Run refuses a negative count rather than reading for ever (a share of -4
// per job or thread means "until the run stops") or returning at once with
// nothing read (a share of 0).
func TestRunRefusesANegativeCount(t *testing.T) {
	w, c := smallRunners(t, 2)
	for _, s := range []struct {
		name string
		Runner
		stop func()
	}{
		{"workload", w, func() { w.halt() }},
		{"ceiling", c, func() { c.halt() }},
	} {
		for _, n := range []int64{-8, -1} {
			type outcome struct {
				r   Result
				err error
			}
			done := make(chan outcome, 1)
			go func() {
				r, err := s.Run(n)
				done <- outcome{r, err}
			}()
			var o outcome
			select {
			case o = <-done:
			case <-time.After(30 * time.Second):
				s.stop() // end the endless run, so that the test fails, not hangs
				<-done
				t.Fatalf("%s: Run(%d) was still reading after 30s", s.name, n)
			}
			require.Error(t, o.err, "%s: Run(%d)", s.name, n)
			require.Zero(t, o.r.IOs, "%s: Run(%d)", s.name, n)
		}
	}
	r, err := w.Run(0)
	require.NoError(t, err, "zero reads is a valid count")
	require.Zero(t, r.IOs)
}

// An iodepth and numjobs whose product, the reads in flight, overflows an
// int are refused with an error: New sized its channels with the wrapped
// product, and panicked (make of a negative size).
func TestConfigRejectsADepthThatOverflows(t *testing.T) {
	f := dataFile(t, 8<<10)
	for _, d := range []Design{Goroutine, ChanPool} {
		c := Config{File: f, Size: 8 << 10, BS: 4096, IODepth: math.MaxInt/2 + 1, NumJobs: 2, Design: d}
		require.NotPanics(t, func() {
			w, err := New(c)
			require.Error(t, err, "%v", d)
			require.Nil(t, w)
		}, "%v", d)
	}
}

// The timer of a run belongs to that run alone. A failed RunFor returns
// long before its time is up; if its timer has fired by then, its function
// may still be on its way, and stopping the timer cannot call it back. Its
// late stop used to land in whichever run came next, which then ended at
// once: a Run(n) of a reused Runner returned no error and fewer than n reads.
// The test delivers the first run's stop during the second run, after the
// second has started.
func TestATimerStopsOnlyItsOwnRun(t *testing.T) {
	for _, name := range []string{"workload", "ceiling"} {
		t.Run(name, func(t *testing.T) {
			f := dataFile(t, 64<<10)
			var s Runner
			if name == "workload" {
				w, err := New(Config{File: f, Size: 64 << 10, BS: 4096, IODepth: 2, NumJobs: 2, Mode: Defer})
				require.NoError(t, err)
				s = w
			} else {
				c, err := NewCeiling(CeilingConfig{File: f, Size: 64 << 10, BS: 4096, Threads: 2})
				require.NoError(t, err)
				s = c
			}
			defer s.Close()

			// The first run's timer has expired (Stop cannot stop it), and
			// its function is held back.
			var late func()
			savedAfter, savedClock := afterFunc, cpuClock
			defer func() { afterFunc, cpuClock = savedAfter, savedClock }()
			afterFunc = func(_ time.Duration, fn func()) *time.Timer {
				late = fn
				fired := make(chan struct{})
				tm := time.AfterFunc(0, func() { close(fired) })
				<-fired
				return tm
			}
			// Every read of the first run fails.
			require.NoError(t, os.Truncate(f.Name(), 0))
			_, err := s.RunFor(time.Hour)
			require.ErrorIs(t, err, ErrShortRead)
			require.NotNil(t, late)
			afterFunc = savedAfter

			// The data are back; the first run's timer function runs once the
			// second run has started (its first reading of the CPU clock).
			require.NoError(t, os.WriteFile(f.Name(), make([]byte, 64<<10), 0o644))
			cpuClock = func() time.Duration {
				if late != nil {
					late()
					late = nil
				}
				return savedClock()
			}
			r, err := s.Run(500)
			require.NoError(t, err)
			require.Equal(t, uint64(500), r.IOs, "the second run does all its reads")
		})
	}
}

// The read buffers a Config asks for, IODepth x NumJobs x BS bytes, are
// bounded by MaxBuffers: beyond it New returns an error naming the bound and
// the product, rather than allocating until memory runs out.
func TestConfigRejectsBuffersAboveTheBound(t *testing.T) {
	f := dataFile(t, 8<<10)
	for _, c := range []Config{
		{File: f, Size: 2 << 30, BS: 1<<30 + 1, IODepth: 1, NumJobs: 1},
		{File: f, Size: 2 << 30, BS: 512 << 20, IODepth: 1, NumJobs: 3},
		{File: f, Size: 8 << 10, BS: 4096, IODepth: 1 << 19, NumJobs: 2, Design: Goroutine},
		{File: f, Size: math.MaxInt64, BS: math.MaxInt / 2, IODepth: 2, NumJobs: 1, Design: ChanPool},
	} {
		w, err := New(c)
		require.ErrorContains(t, err, "1073741824", "%+v", c)
		require.Nil(t, w)
		want := new(big.Int).Mul(big.NewInt(int64(c.IODepth*c.NumJobs)), big.NewInt(int64(c.BS)))
		require.ErrorContains(t, err, want.String(), "%+v", c)
	}
	c, err := NewCeiling(CeilingConfig{File: f, Size: 2 << 30, BS: 512 << 20, Threads: 3})
	require.ErrorContains(t, err, "1073741824")
	require.ErrorContains(t, err, "1610612736")
	require.Nil(t, c)

	require.NoError(t, CheckBuffers(1, MaxBuffers))
	require.NoError(t, CheckBuffers(MaxBuffers/4096, 4096))
	require.Error(t, CheckBuffers(1, MaxBuffers+1))
	require.Error(t, CheckBuffers(MaxBuffers/4096+1, 4096))
	require.NoError(t, CheckBuffers(MaxInFlight, 1))
	require.EqualError(t, CheckBuffers(MaxInFlight+1, 1), "1048577 reads in flight, above the bound of 1048576")
	require.Error(t, CheckBuffers(math.MaxInt, math.MaxInt))
}

// heldIssuer starts no read: it hands every submitted request to the test,
// which reads and completes it when it chooses.
type heldIssuer struct{ submitted chan *request }

func (i heldIssuer) submit(r *request) error {
	i.submitted <- r
	return nil
}

func (i heldIssuer) flush() error { return nil }

// A job whose wait on its notifier fails still has reads in flight, which
// complete later into its used list. The job used to return at once, and
// the next run, which reuses the requests, could submit one still being
// read: one buffer read into twice at once, and its completion counted in
// the wrong run. The test holds a job's two reads, fails its wait, then
// completes the reads one by one: Run returns only after the last, with
// both counted and nothing left for the next run, which then runs as usual.
func TestAFailedWaitLeavesNoReadInFlight(t *testing.T) {
	f := dataFile(t, 64<<10)
	w, err := New(Config{File: f, Size: 64 << 10, BS: 4096, IODepth: 2, NumJobs: 1, Mode: Each, Design: Goroutine})
	require.NoError(t, err)
	defer w.Close()
	j := w.jobs[0]
	iss := j.iss
	held := heldIssuer{submitted: make(chan *request, 2)}
	j.iss = held

	errWait := errors.New("wait failed")
	var waits atomic.Int64
	failed := make(chan struct{})
	saved := waitIRQ
	defer func() { waitIRQ = saved }()
	waitIRQ = func(*threadpool.Notifier, context.Context) error {
		if waits.Add(1) == 1 {
			close(failed)
		}
		return errWait
	}

	type outcome struct {
		r   Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		r, err := w.Run(100)
		done <- outcome{r, err}
	}()
	reqs := []*request{<-held.submitted, <-held.submitted}
	<-failed
	for i, r := range reqs {
		select {
		case o := <-done:
			t.Fatalf("Run returned with %d reads in flight: %v", len(reqs)-i, o.err)
		default:
		}
		r.read()
		r.complete(nil)
	}
	o := <-done
	require.ErrorIs(t, o.err, errWait)
	require.Equal(t, uint64(2), o.r.IOs, "the reads in flight count in their own run")
	require.Zero(t, j.inflight, "no read in flight once Run has returned")
	require.Nil(t, j.used.take(), "nothing left on the used list for the next run")
	require.Equal(t, int64(1), waits.Load(), "a notifier that failed is not waited on again in the run")

	waitIRQ, j.iss = saved, iss
	r, err := w.Run(100)
	require.NoError(t, err)
	require.Equal(t, uint64(100), r.IOs)
	require.Equal(t, uint64(102), w.Progress())
}

// Once closed, a Runner of any design refuses to run with ErrClosed, and a
// second Close does nothing: a goroutine or channel-fed workload used to
// panic, sending a read on the channel Close had closed.
func TestRunAfterCloseIsRefused(t *testing.T) {
	f := dataFile(t, 64<<10)
	runners := map[string]Runner{}
	for _, d := range Designs {
		w, err := New(Config{File: f, Size: 64 << 10, BS: 4096, IODepth: 2, NumJobs: 2, Mode: Defer, Design: d})
		require.NoError(t, err)
		runners[d.String()] = w
	}
	c, err := NewCeiling(CeilingConfig{File: f, Size: 64 << 10, BS: 4096, Threads: 2})
	require.NoError(t, err)
	runners["ceiling"] = c
	for name, r := range runners {
		_, err := r.Run(8)
		require.NoError(t, err, name)
		r.Close()
		r.Close()
		_, err = r.Run(8)
		require.ErrorIs(t, err, ErrClosed, name)
		_, err = r.RunFor(time.Millisecond)
		require.ErrorIs(t, err, ErrClosed, name)
	}
}

// cacheLine is the unit of false sharing on the machines measured.
const cacheLine = 64

// requireOwnGenerators requires that each of rngs draws from the generator
// state beside it in pcgs, and that no two of pcgs share a cache line.
func requireOwnGenerators(t *testing.T, what string, pcgs []*rand.PCG, rngs []*rand.Rand) {
	t.Helper()
	lines := map[uintptr]int{}
	for i, pcg := range pcgs {
		pcg.Seed(1, uint64(i))
		want := rand.New(rand.NewPCG(1, uint64(i))).Uint64()
		require.Equal(t, want, rngs[i].Uint64(), "%s %d draws from its own generator", what, i)
		line := uintptr(unsafe.Pointer(pcg)) / cacheLine
		prev, shared := lines[line]
		require.False(t, shared, "%s %d's generator shares a cache line with %s %d's", what, i, what, prev)
		lines[line] = i
	}
}

// Every job, and every Ceiling thread, draws its offsets from the generator
// inside it, and no two of them share a cache line: each draw writes the
// generator's state, and the jobs' generators, made one after another,
// shared lines, a false-sharing miss per read that a Ceiling thread did
// not pay.
func TestGeneratorsDoNotShareACacheLine(t *testing.T) {
	f := dataFile(t, 64<<10)
	w, err := New(Config{File: f, Size: 64 << 10, BS: 4096, IODepth: 1, NumJobs: 8, Mode: Defer})
	require.NoError(t, err)
	defer w.Close()
	c, err := NewCeiling(CeilingConfig{File: f, Size: 64 << 10, BS: 4096, Threads: 8})
	require.NoError(t, err)
	defer c.Close()
	var pcgs []*rand.PCG
	var rngs []*rand.Rand
	for _, j := range w.jobs {
		pcgs, rngs = append(pcgs, &j.pcg), append(rngs, j.rng)
	}
	requireOwnGenerators(t, "job", pcgs, rngs)
	pcgs, rngs = nil, nil
	for _, rd := range c.readers {
		pcgs, rngs = append(pcgs, &rd.pcg), append(rngs, rd.rng)
	}
	requireOwnGenerators(t, "ceiling thread", pcgs, rngs)
}

// The progress counter, which the jobs or Ceiling threads add to, is at
// least a cache line away from the fields read on every read (the stop
// flag, the file, the block count, the mode, the epoch).
func TestProgressHasACacheLineOfItsOwn(t *testing.T) {
	var w Workload
	var c Ceiling
	wp := unsafe.Offsetof(w.runControl) + unsafe.Offsetof(w.progress)
	cp := unsafe.Offsetof(c.runControl) + unsafe.Offsetof(c.progress)
	far := func(name string, p, q uintptr) {
		d := max(p, q) - min(p, q)
		require.GreaterOrEqual(t, d, uintptr(cacheLine), "%s is %d bytes from progress", name, d)
	}
	far("Workload.file", wp, unsafe.Offsetof(w.file))
	far("Workload.blocks", wp, unsafe.Offsetof(w.blocks))
	far("Workload.mode", wp, unsafe.Offsetof(w.mode))
	far("Workload.epoch", wp, unsafe.Offsetof(w.epoch))
	far("Workload.state", wp, unsafe.Offsetof(w.runControl)+unsafe.Offsetof(w.state))
	far("Ceiling.file", cp, unsafe.Offsetof(c.file))
	far("Ceiling.blocks", cp, unsafe.Offsetof(c.blocks))
	far("Ceiling.state", cp, unsafe.Offsetof(c.runControl)+unsafe.Offsetof(c.state))
}
