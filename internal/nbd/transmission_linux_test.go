package nbd

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestFlushAndFUASyncTheFile serves a file and then swaps /dev/null in
// for it, on which fdatasync fails with EINVAL (OpenExport refuses a
// character device), so that a reply shows whether the server synced: a
// flush, and a write, trim or write zeroes with FUA, must each sync the
// file and reply with the error; the same requests without FUA do not
// sync.
func TestFlushAndFUASyncTheFile(t *testing.T) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	require.NoError(t, err)
	ts := startServer(t, serverConfig{tune: func(s *Server) {
		require.NoError(t, s.Export.file.Close())
		s.Export.file = null // closed by the export's Close
	}})
	c := dial(t, ts)
	c.connect("")
	for _, typ := range []uint16{cmdWrite, cmdTrim, cmdWriteZeroes} {
		errno, _ := c.do(typ, 0, 0, 0, nil)
		require.Zero(t, errno, "type %d without FUA", typ)
		errno, _ = c.do(typ, cmdFlagFUA, 0, 0, nil)
		require.Equal(t, uint32(errInval), errno, "type %d with FUA must sync", typ)
	}
	errno, _ := c.do(cmdFlush, 0, 0, 0, nil)
	require.Equal(t, uint32(errInval), errno, "a flush must sync")
	ts.waitLog(": write's FUA sync of 0 bytes at 0 failed: invalid argument") // the first failure
}

// TestWriteZeroesKeepsTheRangeAllocatedOnlyWithNoHole checks the file's
// layout after two write zeroes on a file with no holes: without
// NBD_CMD_FLAG_NO_HOLE the range becomes a hole (punched), with it the
// range stays allocated, as a read of either cannot tell.
func TestWriteZeroesKeepsTheRangeAllocatedOnlyWithNoHole(t *testing.T) {
	const size = 1 << 20
	ts := startServer(t, serverConfig{size: size})
	c := dial(t, ts)
	c.connect("")
	errno, _ := c.do(cmdWriteZeroes, 0, 64<<10, 64<<10, nil)
	require.Zero(t, errno)
	errno, _ = c.do(cmdWriteZeroes, cmdFlagNoHole, 256<<10, 64<<10, nil)
	require.Zero(t, errno)
	f, err := os.Open(ts.file)
	require.NoError(t, err)
	defer f.Close()
	h, err := f.Seek(0, unix.SEEK_HOLE)
	require.NoError(t, err)
	require.Equal(t, int64(64<<10), h, "write zeroes without NO_HOLE punches a hole")
	d, err := f.Seek(64<<10, unix.SEEK_DATA)
	require.NoError(t, err)
	require.Equal(t, int64(128<<10), d, "the hole is the range zeroed")
	h, err = f.Seek(d, unix.SEEK_HOLE)
	require.NoError(t, err)
	require.Equal(t, int64(size), h, "write zeroes with NO_HOLE leaves no hole")
}
