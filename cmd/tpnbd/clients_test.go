package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// These tests drive real NBD clients (nbdinfo, qemu-img, qemu-io, fio)
// against tpnbd. They need the Debian packages libnbd-bin, qemu-utils and
// fio; see requireTool, which skips a test whose tool is missing.

const imageSize = 64 << 20

func TestNbdinfoListsExport(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo", "libnbd-bin")
	s := startTpnbd(t, imageSize, false)
	out := runTool(t, nbdinfo, s.uri)
	require.Contains(t, out, fmt.Sprintf("export-size: %d", imageSize))
	require.Contains(t, out, "can_flush: true")
	require.Contains(t, out, "can_fua: true")
	require.Contains(t, out, "can_multi_conn: true")
	require.Contains(t, out, "is_read_only: false")
	require.Contains(t, out, "using structured packets")
	require.Contains(t, out, "base:allocation")

	out = runTool(t, nbdinfo, "--list", "nbd+unix://?socket="+s.sock)
	require.Contains(t, out, `export="disk"`)
}

func TestTCPAndUnixTogether(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo", "libnbd-bin")
	qemuImg := requireTool(t, "qemu-img", "qemu-utils")
	s := startTpnbd(t, 4<<20, true, "-tcp", "127.0.0.1:0")
	require.NotEmpty(t, s.tcpURI)
	require.Contains(t, runTool(t, nbdinfo, s.tcpURI), "export-size: 4194304")
	out := runTool(t, qemuImg, "compare", "-f", "raw", "-F", "raw", s.tcpURI, s.uri)
	require.Contains(t, out, "identical")
}

func TestQemuImgCopiesBothWays(t *testing.T) {
	qemuImg := requireTool(t, "qemu-img", "qemu-utils")
	s := startTpnbd(t, imageSize, true)
	dir := t.TempDir()

	// Out of the server into a local file.
	out := filepath.Join(dir, "out.img")
	runTool(t, qemuImg, "convert", "-f", "raw", "-O", "raw", s.uri, out)
	require.Contains(t, runTool(t, qemuImg, "compare", "-f", "raw", "-F", "raw", s.file, out), "identical")

	// From a new random local image into the server.
	in := filepath.Join(dir, "in.img")
	writeImage(t, in, imageSize, true)
	runTool(t, qemuImg, "convert", "-n", "-f", "raw", "-O", "raw", in, s.uri)
	require.Contains(t, runTool(t, qemuImg, "compare", "-f", "raw", "-F", "raw", in, s.uri), "identical")
	require.Contains(t, runTool(t, qemuImg, "compare", "-f", "raw", "-F", "raw", in, s.file), "identical")
}

func TestReadOnlyRefusesClientWrites(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo", "libnbd-bin")
	qemuIO := requireTool(t, "qemu-io", "qemu-utils")
	s := startTpnbd(t, 1<<20, true, "-readonly")
	require.Contains(t, runTool(t, nbdinfo, s.uri), "is_read_only: true")
	runTool(t, qemuIO, "-r", "-f", "raw", "-c", "read 0 64k", s.uri)
	out, err := exec.Command(qemuIO, "-f", "raw", "-c", "write 0 4k", s.uri).CombinedOutput()
	// qemu refuses to open a read-only export for writing, or the write
	// fails: either way nothing is written.
	if err == nil {
		require.Contains(t, string(out), "failed")
	}
	before, err := os.ReadFile(s.file)
	require.NoError(t, err)
	runTool(t, qemuIO, "-r", "-f", "raw", "-c", "read -v 0 16", s.uri)
	after, err := os.ReadFile(s.file)
	require.NoError(t, err)
	require.Equal(t, before, after)
}

// TestFioVerifies writes with fio through the server, with checksums, and
// reads everything back through it, at queue depths 1 and 64 and with one
// and four connections.
func TestFioVerifies(t *testing.T) {
	fio := requireTool(t, "fio", "fio")
	s := startTpnbd(t, imageSize, false)
	for _, depth := range []int{1, 64} {
		for _, jobs := range []int{1, 4} {
			t.Run(fmt.Sprintf("iodepth=%d,numjobs=%d", depth, jobs), func(t *testing.T) {
				fioVerify(t, fio, s.uri, depth, jobs)
			})
		}
	}
	// fio wrote through the server; its data is in the file.
	f, err := os.ReadFile(s.file)
	require.NoError(t, err)
	require.NotEqual(t, make([]byte, 4096), f[:4096])
}

// TestFioVerifiesFlushEach runs the same check with a flush per reply.
func TestFioVerifiesFlushEach(t *testing.T) {
	fio := requireTool(t, "fio", "fio")
	s := startTpnbd(t, imageSize, false, "-flush=each")
	fioVerify(t, fio, s.uri, 64, 4)
}

// fioVerify writes random blocks with checksums through the server and
// reads them all back through it, failing on any mismatch.
func fioVerify(t *testing.T, fio, uri string, depth, jobs int) {
	t.Helper()
	size := 4 << 20
	if depth > 1 {
		size = 8 << 20
	}
	out := runTool(t, fio,
		"--name=tpnbd", "--ioengine=nbd", "--uri="+uri,
		"--rw=randwrite", "--bs=4k", fmt.Sprintf("--iodepth=%d", depth),
		fmt.Sprintf("--numjobs=%d", jobs), fmt.Sprintf("--size=%d", size),
		fmt.Sprintf("--offset_increment=%d", size),
		"--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0",
		fmt.Sprintf("--randseed=%d", depth*10+jobs), "--group_reporting")
	require.Contains(t, out, "err= 0")
	require.NotContains(t, out, "verify: bad")
	require.Contains(t, out, "read: IOPS=")
}
