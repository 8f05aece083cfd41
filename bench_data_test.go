package threadpool_test

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/batchio/threadpool/internal/randread"
)

// The random-read benchmarks read a data file of -randread.size bytes,
// 64 MiB by default. Without -randread.file each top-level benchmark makes one
// of random bytes in its temporary directory, shared by its sub-benchmarks
// and removed when it ends; with -randread.file that file is used (made if it
// is missing or too short) and left in place.
var (
	randreadFile = flag.String("randread.file", "", "data file for the random-read benchmarks (default: a temporary file per benchmark)")
	randreadSize = flag.Int64("randread.size", 64<<20, "bytes of the data file the random-read benchmarks read")
)

// openDataFile prepares the data file, reads it through once so that it is in
// the page cache, and opens it; the file is closed when b ends.
func openDataFile(b *testing.B) *os.File {
	b.Helper()
	path := *randreadFile
	if path == "" {
		path = filepath.Join(b.TempDir(), "randread.dat")
	}
	if _, err := randread.PrepareFile(path, *randreadSize); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}
