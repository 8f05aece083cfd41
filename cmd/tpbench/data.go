package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/batchio/threadpool/internal/randread"
)

// dataFile is the open data file and what to do when the run is over.
type dataFile struct {
	f       *os.File
	cleanup func() // closes f and removes what openData made temporarily
}

// openData prepares the data file (a temporary one without -filename), reads
// it through so that it is in the page cache, and opens it.
func openData(o *options) (*dataFile, error) {
	path, tmpDir := o.filename, ""
	if path == "" {
		dir, err := os.MkdirTemp("", "tpbench-")
		if err != nil {
			return nil, err
		}
		tmpDir, path = dir, filepath.Join(dir, "randread.dat")
	}
	removeTmp := func() {
		if tmpDir != "" {
			os.RemoveAll(tmpDir)
		}
	}
	if _, err := randread.PrepareFile(path, o.size); err != nil {
		removeTmp()
		return nil, fmt.Errorf("preparing the data file: %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		removeTmp()
		return nil, err
	}
	return &dataFile{f: f, cleanup: func() { f.Close(); removeTmp() }}, nil
}
