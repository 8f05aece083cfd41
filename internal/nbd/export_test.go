package nbd

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A system call on the export's file that a signal interrupts (EINTR, as
// fdatasync or fallocate may return on a network or FUSE file system) is made
// again, as os.File.Sync does, rather than failing the request with NBD_EIO.
func TestExportControlRetriesInterruptedCalls(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	require.NoError(t, os.WriteFile(path, make([]byte, 4096), 0o600))
	e, err := OpenExport(path, "", false)
	require.NoError(t, err)
	defer e.Close()
	calls := 0
	err = e.control(func(fd int) error {
		calls++
		if calls < 3 {
			return unix.EINTR
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 3, calls)
	err = e.control(func(int) error { return unix.EIO })
	require.ErrorIs(t, err, unix.EIO, "other errors are returned at once")
}

// Only a regular file or a block device can be an export. Anything else is
// refused with an error naming what it is: a directory served read-only
// had the size 2^63-1 and failed every read, a character device served 0
// bytes and failed every flush, and opening a named pipe waited for a
// writer before failing to find its size.
func TestOpenExportRefusesWhatIsNoDisk(t *testing.T) {
	dir := t.TempDir()
	pipe := filepath.Join(dir, "pipe")
	require.NoError(t, unix.Mkfifo(pipe, 0o600))
	for _, c := range []struct{ path, what string }{
		{dir, "a directory"},
		{pipe, "a named pipe"},
		{os.DevNull, "a character device"},
	} {
		for _, readOnly := range []bool{false, true} {
			e, err := OpenExport(c.path, "", readOnly)
			require.Error(t, err, "%s, read-only %v", c.path, readOnly)
			require.Nil(t, e)
			require.Equal(t, c.path+" is "+c.what+": an export is a regular file or a block device", err.Error())
		}
	}
	link := filepath.Join(dir, "link")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "disk.img"), make([]byte, 4096), 0o600))
	require.NoError(t, os.Symlink("disk.img", link))
	e, err := OpenExport(link, "", false)
	require.NoError(t, err, "a link to a regular file")
	require.EqualValues(t, 4096, e.Size())
	require.NoError(t, e.Close())
}

// The file OpenExport opens is checked again once open, since the path may
// name another file by then; a named pipe put there meanwhile must not keep
// it waiting for a writer (a read-only open of a pipe blocks until one comes).
// The file it keeps is back in blocking mode.
func TestOpenExportableRefusesAPipeWithoutWaiting(t *testing.T) {
	dir := t.TempDir()
	pipe := filepath.Join(dir, "pipe")
	require.NoError(t, unix.Mkfifo(pipe, 0o600))
	done := make(chan error, 1)
	go func() {
		f, err := openExportable(pipe, os.O_RDONLY)
		if f != nil {
			f.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		require.EqualError(t, err, pipe+" is a named pipe: an export is a regular file or a block device")
	case <-time.After(30 * time.Second):
		// Let the open in progress return before the test ends.
		w, err := os.OpenFile(pipe, os.O_WRONLY, 0)
		require.NoError(t, err)
		w.Close()
		<-done
		require.Fail(t, "opening a named pipe waited for a writer")
	}

	path := filepath.Join(dir, "disk.img")
	require.NoError(t, os.WriteFile(path, make([]byte, 4096), 0o600))
	for _, flag := range []int{os.O_RDONLY, os.O_RDWR} {
		f, err := openExportable(path, flag)
		require.NoError(t, err)
		fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
		require.NoError(t, err)
		require.Zero(t, fl&unix.O_NONBLOCK, "flag %#x: the export's file blocks", flag)
		require.NoError(t, f.Close())
	}
}
