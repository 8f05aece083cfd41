package randread

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
)

// chunk is the buffer size a data file is written with.
const chunk = 1 << 20

// PrepareFile makes sure path holds at least size bytes and that they are in
// the page cache. A missing or shorter file is (re)written with size random
// bytes; a file that is long enough is left as it is. Either way it is then
// read through once, so that the measured reads hit the cache, not the disk.
// It returns whether it wrote the file.
func PrepareFile(path string, size int64) (created bool, err error) {
	if size <= 0 {
		return false, fmt.Errorf("data file size %d must be positive", size)
	}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) || (err == nil && st.Mode().IsRegular() && st.Size() < size):
		if err := writeRandom(path, size); err != nil {
			return false, err
		}
		created = true
	case err != nil:
		return false, err
	case !st.Mode().IsRegular():
		return false, fmt.Errorf("%s is not a regular file", path)
	}
	return created, readThrough(path, size)
}

// writeRandom writes size random bytes to path, truncating it.
func writeRandom(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(rand.Uint32())
	}
	w := bufio.NewWriterSize(f, chunk)
	_, err = io.CopyN(w, rand.NewChaCha8(seed), size)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// readThrough reads the first size bytes of path once.
func readThrough(path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(io.Discard, io.LimitReader(f, size))
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if n < size {
		return fmt.Errorf("reading %s: %d bytes, want %d", path, n, size)
	}
	return nil
}
