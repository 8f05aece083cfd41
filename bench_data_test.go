package threadpool_test

import (
	"flag"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/batchio/threadpool/internal/randread"
	"go.uber.org/goleak"
)

// The random-read benchmarks share one data file per test process. By default
// it is 64 MiB of random bytes in a temporary directory, made on first use and
// removed when the process ends; -randread.file reads an existing file (or
// makes it) instead and leaves it in place.
var (
	randreadFile = flag.String("randread.file", "", "data file for the random-read benchmarks (default: a temporary file)")
	randreadSize = flag.Int64("randread.size", 64<<20, "bytes of the data file the random-read benchmarks read")
)

// benchData is the shared data file; made once, closed by TestMain.
var benchData struct {
	once sync.Once
	dir  string // the temporary directory to remove, if one was made
	f    *os.File
	err  error
}

// dataFile returns the shared data file, making it on first use.
func dataFile(b *testing.B) *os.File {
	b.Helper()
	d := &benchData
	d.once.Do(func() {
		path := *randreadFile
		if path == "" {
			if d.dir, d.err = os.MkdirTemp("", "threadpool-bench-"); d.err != nil {
				return
			}
			path = filepath.Join(d.dir, "randread.dat")
		}
		if _, d.err = randread.PrepareFile(path, *randreadSize); d.err != nil {
			return
		}
		d.f, d.err = os.Open(path)
	})
	if d.err != nil {
		b.Fatal(d.err)
	}
	return d.f
}

// removeDataFile closes the shared data file and removes it if it was made in
// a temporary directory.
func removeDataFile() {
	d := &benchData
	if d.f != nil {
		d.f.Close()
	}
	if d.dir != "" {
		os.RemoveAll(d.dir)
	}
}

// TestMain checks this package for leaked goroutines, like the package's
// internal tests do, after removing the benchmarks' data file.
func TestMain(m *testing.M) { goleak.VerifyTestMain(cleanupAfter{m}) }

// cleanupAfter runs the tests and benchmarks, then removes the data file.
type cleanupAfter struct{ m *testing.M }

func (c cleanupAfter) Run() int {
	code := c.m.Run()
	removeDataFile()
	return code
}
