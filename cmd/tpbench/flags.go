package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/batchio/threadpool/internal/randread"
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
	json     bool
	progress bool

	// open prepares and opens the data file and returns a function that
	// releases it; openData unless a test replaces it.
	open func(o *options) (*dataFile, error)
}

// shape is one iodepth and numjobs pair.
type shape struct{ iodepth, numjobs int }

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("tpbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{open: openData}
	var size, iodepth, numjobs, modes string
	fs.StringVar(&o.filename, "filename", "", "data file (made, or extended, with random bytes if shorter than -size); default a temporary file, removed at exit")
	fs.StringVar(&size, "size", "256M", "bytes of the file to read, with an optional K, M or G suffix (powers of 1024)")
	fs.IntVar(&o.bs, "bs", 4096, "bytes per read")
	fs.StringVar(&iodepth, "iodepth", "64,1", "reads in flight per job; a comma list pairs with -numjobs")
	fs.StringVar(&numjobs, "numjobs", "8,1", "jobs; a comma list pairs with -iodepth")
	fs.DurationVar(&o.runtime, "runtime", 4*time.Second, "measured time per mode and iodepth/numjobs pair, split over the rounds")
	fs.IntVar(&o.rounds, "rounds", 4, "rounds; each runs every mode once, in rotating order")
	fs.StringVar(&modes, "mode", "all", "each, defer, coalesce, a comma list of them, or all")
	fs.BoolVar(&o.json, "json", false, "print the results as JSON instead of a table")
	fs.BoolVar(&o.progress, "progress", true, "show a progress line on stderr")
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
	case o.runtime < time.Duration(o.rounds)*time.Millisecond:
		return fmt.Errorf("-runtime %v must give each of the %d rounds at least 1ms", o.runtime, o.rounds)
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
	var out []randread.Mode
	seen := map[randread.Mode]bool{}
	for f := range strings.SplitSeq(s, ",") {
		m, err := randread.ParseMode(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("-mode: %w", err)
		}
		if !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("-mode: no mode given")
	}
	return out, nil
}
