package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/batchio/threadpool/internal/randread"
	"golang.org/x/term"
)

// errHelp is returned by parseFlags for -h; the usage is already printed.
var errHelp = flag.ErrHelp

// options is the parsed command line.
type options struct {
	filename string // "" for a temporary file
	size     int64
	bs       int
	shapes   []shape // iodepth x numjobs pairs, one table section each
	runtime  time.Duration
	rounds   int
	modes    []randread.Mode
	designs  []randread.Design // the designs that run the modes
	ceiling  bool              // whether the ceiling is measured too
	json     bool
	progress progressFlag
	args     []string // the command line, for the report's header

	// open prepares and opens the data file and returns a function that
	// releases it; openData unless a test replaces it.
	open func(o *options) (*dataFile, error)
	// isTerminal tells whether a writer is a terminal; writerIsTerminal
	// unless a test replaces it.
	isTerminal func(w io.Writer) bool
	// machine describes the machine; readMachine unless a test replaces it.
	machine func() machine
}

// progressFlag is -progress: unset, it shows the progress line when stderr is
// a terminal; set, it forces the line on or off. It is a boolean flag, so
// -progress alone means -progress=true.
type progressFlag struct {
	set bool // given on the command line
	on  bool // its value, when set
}

// String returns "true", "false" or "auto" (unset).
func (p *progressFlag) String() string {
	if !p.set {
		return "auto"
	}
	return strconv.FormatBool(p.on)
}

// Set parses a boolean and records that the flag was given.
func (p *progressFlag) Set(s string) error {
	on, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("want true or false")
	}
	p.set, p.on = true, on
	return nil
}

// IsBoolFlag lets -progress stand without a value.
func (p *progressFlag) IsBoolFlag() bool { return true }

// show tells whether to draw the progress line on stderr: as forced, or,
// unset, when isTerminal says stderr is a terminal.
func (p *progressFlag) show(stderr io.Writer, isTerminal func(io.Writer) bool) bool {
	if p.set {
		return p.on
	}
	return isTerminal(stderr)
}

// writerIsTerminal tells whether w is a file descriptor open on a terminal.
func writerIsTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

// shape is one iodepth and numjobs pair.
type shape struct{ iodepth, numjobs int }

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("tpbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{open: openData, isTerminal: writerIsTerminal, machine: readMachine, args: args}
	var size, iodepth, numjobs, modes, designs string
	fs.StringVar(&o.filename, "filename", "", "data file (made with random bytes if missing; an existing one shorter than -size is refused, never written); default a temporary file, removed at exit or on SIGINT/SIGTERM/SIGHUP/SIGPIPE")
	fs.StringVar(&size, "size", "256M", "bytes of the file to read, with an optional K, M or G suffix (powers of 1024)")
	fs.IntVar(&o.bs, "bs", 4096, "bytes per read; the buffers, -iodepth x -numjobs x -bs for the designs and GOMAXPROCS x -bs for the ceiling, must fit in 1 GiB")
	fs.StringVar(&iodepth, "iodepth", "64,1", "reads in flight per job; a comma list pairs with -numjobs (-iodepth x -numjobs at most 1048576)")
	fs.StringVar(&numjobs, "numjobs", "8,1", "jobs; a comma list pairs with -iodepth")
	fs.DurationVar(&o.runtime, "runtime", 4*time.Second, "measured time per subject and iodepth/numjobs pair, split over the rounds")
	fs.IntVar(&o.rounds, "rounds", 4, "rounds; each runs every subject once, in rotating order")
	fs.StringVar(&modes, "mode", "all", "each, defer, coalesce, a comma list of them, or all")
	fs.StringVar(&designs, "design", "pool,ceiling", "what runs the reads: pool, goroutine, chanpool, ceiling, a comma list of them, or all; each of the first three runs every -mode, the ceiling runs alone")
	fs.BoolVar(&o.json, "json", false, "print the results as JSON instead of a table")
	fs.Var(&o.progress, "progress", "show a progress line on stderr (default: when stderr is a terminal)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if o.size, err = parseSize(size); err != nil {
		return nil, err
	}
	if o.shapes, err = parseShapes(iodepth, numjobs); err != nil {
		return nil, err
	}
	if o.modes, err = parseModes(modes); err != nil {
		return nil, err
	}
	if o.designs, o.ceiling, err = parseDesigns(designs); err != nil {
		return nil, err
	}
	return o, o.validate()
}

func (o *options) validate() error {
	switch {
	case o.bs <= 0:
		return fmt.Errorf("-bs %d must be positive", o.bs)
	case o.size < int64(o.bs):
		return fmt.Errorf("-size %d is smaller than -bs %d", o.size, o.bs)
	case o.rounds <= 0:
		return fmt.Errorf("-rounds %d must be positive", o.rounds)
	case o.runtime/time.Duration(o.rounds) < time.Millisecond: // no product: it could overflow
		return fmt.Errorf("-runtime %v must give each of the %d rounds at least 1ms", o.runtime, o.rounds)
	}
	// Every read in flight, and every thread of the ceiling, has its own
	// buffer of -bs bytes; the ceiling's threads, one per GOMAXPROCS, are
	// bounded by randread.MaxThreads as well.
	if len(o.designs) > 0 {
		for _, sh := range o.shapes {
			if err := randread.CheckBuffers(sh.iodepth*sh.numjobs, o.bs); err != nil {
				return fmt.Errorf("-iodepth %d times -numjobs %d at -bs %d: %w", sh.iodepth, sh.numjobs, o.bs, err)
			}
		}
	}
	if o.ceiling {
		procs := runtime.GOMAXPROCS(0)
		if procs > randread.MaxThreads {
			return fmt.Errorf("the ceiling's %d threads (GOMAXPROCS) are above the bound of %d locked OS threads: set GOMAXPROCS to at most %d, or leave the ceiling out of -design",
				procs, randread.MaxThreads, randread.MaxThreads)
		}
		if err := randread.CheckBuffers(procs, o.bs); err != nil {
			return fmt.Errorf("the ceiling's %d threads at -bs %d: %w", procs, o.bs, err)
		}
	}
	return nil
}

// parseSize reads a byte count with an optional K, M or G suffix.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	num := strings.TrimSuffix(strings.ToUpper(s), "B")
	if n := len(num); n > 0 {
		switch num[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		}
		if mult > 1 {
			num = num[:n-1]
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v <= 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("-size %q is not a positive byte count such as 4096, 64M or 1G", s)
	}
	return v * mult, nil
}

// parseShapes pairs the -iodepth and -numjobs lists.
func parseShapes(iodepth, numjobs string) ([]shape, error) {
	depths, err := parseInts("-iodepth", iodepth)
	if err != nil {
		return nil, err
	}
	jobs, err := parseInts("-numjobs", numjobs)
	if err != nil {
		return nil, err
	}
	if len(depths) != len(jobs) {
		return nil, fmt.Errorf("-iodepth has %d values and -numjobs %d: give as many of each", len(depths), len(jobs))
	}
	shapes := make([]shape, len(depths))
	for i := range depths {
		if depths[i] > math.MaxInt/jobs[i] {
			return nil, fmt.Errorf("-iodepth %d times -numjobs %d overflows", depths[i], jobs[i])
		}
		shapes[i] = shape{depths[i], jobs[i]}
	}
	return shapes, nil
}

func parseInts(name, s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%s %q: want positive integers separated by commas", name, s)
		}
		out = append(out, v)
	}
	return out, nil
}

// parseModes reads "all" or a comma list of modes, keeping each once.
func parseModes(s string) ([]randread.Mode, error) {
	if s == "all" {
		return randread.Modes, nil
	}
	return parseList("-mode", s, randread.ParseMode)
}

// ceilingName is the -design value that asks for the ceiling.
const ceilingName = "ceiling"

// parseDesigns reads "all" or a comma list of designs and "ceiling", keeping
// each once, and returns the designs and whether the ceiling was listed.
func parseDesigns(s string) ([]randread.Design, bool, error) {
	if s == "all" {
		return randread.Designs, true, nil
	}
	var ceiling bool
	designs, err := parseList("-design", s, func(name string) (randread.Design, error) {
		if name == ceilingName {
			ceiling = true
			return -1, nil
		}
		d, err := randread.ParseDesign(name)
		if err != nil {
			err = fmt.Errorf("%w, or ceiling", err)
		}
		return d, err
	})
	designs = slices.DeleteFunc(designs, func(d randread.Design) bool { return d < 0 })
	if err == nil && len(designs) == 0 && !ceiling {
		err = errors.New("-design: nothing to run")
	}
	return designs, ceiling, err
}

// parseList reads a comma list of names with parse, keeping each value once.
func parseList[T comparable](flagName, s string, parse func(string) (T, error)) ([]T, error) {
	var out []T
	for f := range strings.SplitSeq(s, ",") {
		v, err := parse(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", flagName, err)
		}
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out, nil
}
