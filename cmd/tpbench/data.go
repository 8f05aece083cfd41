package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

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
			return nil, fmt.Errorf("making the temporary data file's directory (in $TMPDIR, else /tmp): %w", err)
		}
		tmpDir, path = dir, filepath.Join(dir, "randread.dat")
	}
	removeTmp := func() {}
	if tmpDir != "" {
		removeTmp = removeOnSignal(tmpDir)
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

// removeOnSignal removes dir if the process gets SIGINT, SIGTERM or SIGHUP
// (its terminal closed) before the returned function is called, and then
// lets the signal end the process as it would have; the returned function
// removes dir and stops watching. A temporary data file of hundreds of MiB
// then does not outlive an interrupted run. SIGPIPE, from a write to a
// standard output or error whose reader has gone (tpbench | less, less
// quit early), ends the process with status 141 once dir is removed, as
// the signal itself would have without the removal. A signal that the
// process ignored from its start (SIGINT in a background job, SIGHUP under
// nohup) stays ignored.
func removeOnSignal(dir string) (remove func()) {
	sigs := make(chan os.Signal, 1)
	var watch []os.Signal
	for _, sig := range []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE} {
		if !signal.Ignored(sig) {
			watch = append(watch, sig)
		}
	}
	if len(watch) == 0 {
		return func() { os.RemoveAll(dir) }
	}
	signal.Notify(sigs, watch...)
	done := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case sig := <-sigs:
			os.RemoveAll(dir)
			if sig == syscall.SIGPIPE {
				// A Go program ignores a SIGPIPE sent to it: exit as one
				// that the signal ended would have.
				os.Exit(128 + int(syscall.SIGPIPE))
			}
			signal.Reset(watch...)
			if p, err := os.FindProcess(os.Getpid()); err == nil {
				_ = p.Signal(sig) // its default action now: the process ends
			}
		case <-done:
		}
	}()
	return func() {
		os.RemoveAll(dir) // before Stop: a signal then finds nothing left
		signal.Stop(sigs)
		close(done)
		<-watched
	}
}
