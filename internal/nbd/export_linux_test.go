package nbd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
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
