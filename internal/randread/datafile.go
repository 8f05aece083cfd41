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
// the page cache. A missing file is made with size random bytes; a file
// that is long enough is left as it is; an existing file that is shorter,
// or is not a regular file, is refused with an error and left alone (it may
// hold someone's data: PrepareFile never writes to a file it did not make).
// Either way the file is then read through once, so that the measured reads
// hit the cache, not the disk. It returns whether it made the file.
func PrepareFile(path string, size int64) (created bool, err error) {
	if size <= 0 {
		return false, fmt.Errorf("data file size %d must be positive", size)
	}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := writeRandom(path, size); err != nil {
			return false, err
		}
		created = true
	case err != nil:
		return false, err
	case !st.Mode().IsRegular():
		return false, fmt.Errorf("%s is not a regular file", path)
	case st.Size() < size:
		return false, fmt.Errorf("%s holds %d bytes, fewer than the %d to read: it is left alone; remove it to have it made, or read fewer bytes", path, st.Size(), size)
	}
	return created, readThrough(path, size)
}

// writeRandom makes the file path, which must not exist, with size random
// bytes. A file it could not fill is removed.
func writeRandom(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
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
		os.Remove(path)
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
