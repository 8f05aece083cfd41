package nbd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A block device's export learns its logical block size, and WRITE_ZEROES
// and TRIM of ranges that are not whole blocks succeed on it (fallocate
// alone refuses them with EINVAL). It needs a loop device, which takes
// root: without one the test is skipped, saying why.
func TestBlockDeviceExportZeroesAndTrimsPartialBlocks(t *testing.T) {
	const size = 1 << 20
	backing := filepath.Join(t.TempDir(), "backing.img")
	want := make([]byte, size)
	for i := range want {
		want[i] = 0xab
	}
	require.NoError(t, os.WriteFile(backing, want, 0o600))
	out, err := exec.Command("losetup", "--find", "--show", backing).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device to test a block device with (losetup: %v: %s)", err, strings.TrimSpace(string(out)))
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		out, err := exec.Command("losetup", "--detach", dev).CombinedOutput()
		require.NoError(t, err, "losetup --detach %s: %s", dev, out)
	})
	e, err := OpenExport(dev, "", false)
	require.NoError(t, err)
	defer e.Close()
	require.EqualValues(t, size, e.Size())
	require.Greater(t, e.align, int64(1), "a block device's logical block size")

	require.NoError(t, e.zero(1000, 5000, false))
	clear(want[1000:6000])
	require.NoError(t, e.zero(9000, 100, true))
	clear(want[9000:9100])
	require.NoError(t, e.trim(70000, 3*e.align+1))
	start := (70000 + e.align - 1) / e.align * e.align
	clear(want[start : (70000+3*e.align+1)/e.align*e.align])
	got := make([]byte, size)
	require.NoError(t, e.readAt(got, 0))
	require.Equal(t, want, got)
}

// On a block device fallocate takes whole logical blocks only (EINVAL
// otherwise), so WRITE_ZEROES and TRIM of a range that does not start and
// end on block boundaries send fallocate the whole blocks inside it:
// WRITE_ZEROES writes zeroes over the partial blocks at its ends, TRIM
// leaves them alone. A regular file with the alignment of a block device
// stands in for one here, and every range given to fallocate is checked.
func TestExportZeroAndTrimSendWholeBlocksToFallocate(t *testing.T) {
	const size, blk = 64 << 10, 4096
	var ranges [][2]int64 // given to fallocate: offset, length
	defer func(f func(int, uint32, int64, int64) error) { fallocate = f }(fallocate)
	fallocate = func(fd int, mode uint32, off, length int64) error {
		ranges = append(ranges, [2]int64{off, length})
		return unix.Fallocate(fd, mode, off, length)
	}
	// requireWholeBlocks checks what went to fallocate: whole blocks, and
	// something exactly when the range holds a whole block.
	requireWholeBlocks := func(t *testing.T, off, length int64) {
		for _, r := range ranges {
			require.True(t, r[0]%blk == 0 && r[1]%blk == 0 && r[1] > 0, "fallocate of %d bytes at %d", r[1], r[0])
		}
		start := (off + blk - 1) / blk * blk
		require.Equal(t, start+blk <= off+length, len(ranges) > 0, "fallocate called: %v", ranges)
	}
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
				ranges = nil
				require.NoError(t, e.zero(c.off, c.length, keep))
				requireWholeBlocks(t, c.off, c.length)
				clear(want[c.off : c.off+c.length])
				require.Equal(t, want, contents(t, e))
			})
		}
		t.Run("trim/"+c.name, func(t *testing.T) {
			e, want := fill(t)
			ranges = nil
			require.NoError(t, e.trim(c.off, c.length))
			requireWholeBlocks(t, c.off, c.length)
			start := (c.off + blk - 1) / blk * blk
			end := (c.off + c.length) / blk * blk
			if start < end { // the whole blocks were punched out
				clear(want[start:end])
			}
			require.Equal(t, want, contents(t, e))
		})
	}
}
