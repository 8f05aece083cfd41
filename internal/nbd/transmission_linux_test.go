package nbd

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFlushAndFUASyncTheFile serves /dev/null, on which fdatasync fails
// with EINVAL, so that a reply shows whether the server synced: a flush,
// and a write, trim or write zeroes with FUA, must each sync the file and
// reply with the error; the same requests without FUA do not sync.
func TestFlushAndFUASyncTheFile(t *testing.T) {
	ts := startServer(t, serverConfig{path: "/dev/null"})
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
}
