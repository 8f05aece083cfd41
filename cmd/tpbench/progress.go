package main

import (
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/batchio/threadpool/internal/randread"
)

// progressEvery is how often the progress line is redrawn.
const progressEvery = 250 * time.Millisecond

// progress redraws one status line on stderr ("\r"-updated) while a run is
// going: what runs, and the reads checked so far with their rate. It formats
// into a reused buffer, so that it adds no allocations to the measurement.
type progress struct {
	out     io.Writer
	enabled bool

	// Set by start and read by the drawing goroutine until stop returns.
	label string
	w     randread.Runner
	begin time.Time
	base  uint64

	stopCh chan struct{}
	wg     sync.WaitGroup
	buf    []byte // drawing goroutine only (and clear, once it is stopped)
	width  int    // length of the last line drawn
}

func newProgress(out io.Writer, enabled bool) *progress {
	return &progress{out: out, enabled: enabled, buf: make([]byte, 0, 256)}
}

// start begins redrawing the line for a run of w.
func (p *progress) start(label string, w randread.Runner) {
	if !p.enabled {
		return
	}
	p.label, p.w, p.begin, p.base = label, w, time.Now(), w.Progress()
	p.stopCh = make(chan struct{})
	p.wg.Go(p.loop)
}

// stop ends the redrawing started by start.
func (p *progress) stop() {
	if !p.enabled {
		return
	}
	close(p.stopCh)
	p.wg.Wait()
}

func (p *progress) loop() {
	t := time.NewTicker(progressEvery)
	defer t.Stop()
	for {
		p.draw()
		select {
		case <-p.stopCh:
			return
		case <-t.C:
		}
	}
}

func (p *progress) draw() {
	n := p.w.Progress() - p.base
	secs := time.Since(p.begin).Seconds()
	b := append(p.buf[:0], '\r')
	b = append(b, p.label...)
	b = append(b, "  "...)
	b = strconv.AppendUint(b, n, 10)
	b = append(b, " reads"...)
	if secs > 0 {
		b = append(b, ", "...)
		b = strconv.AppendFloat(b, float64(n)/secs, 'f', 0, 64)
		b = append(b, " IOPS"...)
	}
	p.write(b)
}

// write draws line b, blanking what is left of a longer earlier line.
func (p *progress) write(b []byte) {
	width := len(b) - 1
	for i := width; i < p.width; i++ {
		b = append(b, ' ')
	}
	p.width = width
	p.buf = b
	p.out.Write(b)
}

// clear blanks the line, once no run is being drawn.
func (p *progress) clear() {
	if !p.enabled || p.width == 0 {
		return
	}
	p.write(append(p.buf[:0], '\r'))
	p.out.Write([]byte{'\r'})
	p.width = 0
}
