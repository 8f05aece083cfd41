package nbd

import (
	"fmt"
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

// On a block device fallocate takes whole logical blocks only (EINVAL
// otherwise), so WRITE_ZEROES and TRIM of a range that does not start and
// end on block boundaries send fallocate the whole blocks inside it:
// WRITE_ZEROES writes zeroes over the partial blocks at its ends, TRIM
// leaves them alone. A regular file with the alignment of a block device
// stands in for one here.
func TestExportZeroAndTrimSendWholeBlocksToFallocate(t *testing.T) {
	const size, blk = 64 << 10, 4096
	fill := func(t *testing.T) (*Export, []byte) {
		path := filepath.Join(t.TempDir(), "disk.img")
		want := make([]byte, size)
		for i := range want {
			want[i] = 0xab
		}
		require.NoError(t, os.WriteFile(path, want, 0o600))
		e, err := OpenExport(path, "", false)
		require.NoError(t, err)
		t.Cleanup(func() { e.Close() })
		require.EqualValues(t, 1, e.align, "a regular file takes any range")
		e.align = blk
		return e, want
	}
	contents := func(t *testing.T, e *Export) []byte {
		got := make([]byte, size)
		require.NoError(t, e.readAt(got, 0))
		return got
	}
	for _, c := range []struct {
		name        string
		off, length int64
	}{
		{"both ends partial", 1000, 3*blk + 500},
		{"inside one block", blk + 10, 100},
		{"across one boundary", blk - 10, 20},
		{"aligned", 2 * blk, 3 * blk},
		{"to the end", size - blk - 1, blk + 1},
	} {
		for _, keep := range []bool{false, true} {
			t.Run(fmt.Sprintf("zero/%s/noHole=%v", c.name, keep), func(t *testing.T) {
				e, want := fill(t)
				require.NoError(t, e.zero(c.off, c.length, keep))
				clear(want[c.off : c.off+c.length])
				require.Equal(t, want, contents(t, e))
			})
		}
		t.Run("trim/"+c.name, func(t *testing.T) {
			e, want := fill(t)
			require.NoError(t, e.trim(c.off, c.length))
			start := (c.off + blk - 1) / blk * blk
			end := (c.off + c.length) / blk * blk
			if start < end { // the whole blocks were punched out
				clear(want[start:end])
			}
			require.Equal(t, want, contents(t, e))
		})
	}
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
