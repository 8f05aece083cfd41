package nbd

import (
	"os"
	"path/filepath"
	"testing"

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
