package main

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
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

	s = startTpnbd(t, 1<<20, false, "-structured=false")
	out = runTool(t, nbdinfo, s.uri)
	require.Contains(t, out, "using simple packets")
	require.NotContains(t, out, "base:allocation")
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
	before, err := os.ReadFile(s.file)
	require.NoError(t, err)
	out, err := exec.Command(qemuIO, "-f", "raw", "-c", "write 0 4k", s.uri).CombinedOutput()
	// qemu refuses to open a read-only export for writing, or the write
	// fails: either way nothing is written.
	if err == nil {
		require.Contains(t, string(out), "failed")
	}
	// qemu-io refuses on its side, seeing the read-only flag: send the
	// write itself, which the server must refuse with NBD_EPERM (1).
	c := nbdConnect(t, s.sock)
	var req [28 + 4096]byte
	binary.BigEndian.PutUint32(req[0:], 0x25609513)
	binary.BigEndian.PutUint16(req[6:], 1) // NBD_CMD_WRITE
	binary.BigEndian.PutUint64(req[8:], 7) // cookie
	binary.BigEndian.PutUint32(req[24:], 4096)
	copy(req[28:], bytes.Repeat([]byte{0xee}, 4096))
	_, err = c.Write(req[:])
	require.NoError(t, err)
	var reply [16]byte
	_, err = io.ReadFull(c, reply[:])
	require.NoError(t, err)
	require.Equal(t, uint32(0x67446698), binary.BigEndian.Uint32(reply[0:]), "a simple reply")
	require.Equal(t, uint32(1), binary.BigEndian.Uint32(reply[4:]), "NBD_EPERM")
	require.Equal(t, uint64(7), binary.BigEndian.Uint64(reply[8:]))
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

// TestFioVerifiesSimpleReplies runs the same check with simple replies
// (fio's libnbd negotiates structured replies where it can).
func TestFioVerifiesSimpleReplies(t *testing.T) {
	fio := requireTool(t, "fio", "fio")
	s := startTpnbd(t, imageSize, false, "-structured=false")
	fioVerify(t, fio, s.uri, 64, 4)
}

// TestFioVerifiesWithoutInline runs the same check at iodepth 1 with
// every request through the pool (-inline=false), the path that lone
// requests take by default only when their data is not cached.
func TestFioVerifiesWithoutInline(t *testing.T) {
	fio := requireTool(t, "fio", "fio")
	s := startTpnbd(t, imageSize, false, "-inline=false")
	fioVerify(t, fio, s.uri, 1, 1)
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

// sparseExtents are the data ranges (offset, length) of the sparse test
// image, imageSize bytes: 3.4 MiB of data at scattered offsets, the last
// at the very end, holes elsewhere.
var sparseExtents = [][2]int64{
	{1 << 20, 256 << 10},
	{9<<20 + 64<<10, 64 << 10},
	{20 << 20, 1 << 20},
	{33 << 20, 64 << 10},
	{50 << 20, 2 << 20},
	{imageSize - 64<<10, 64 << 10},
}

// makeSparse rewrites the served file as sparseExtents of random data and
// holes, and returns the data size and whether the file system reports
// the holes (SEEK_DATA); where it does not, tpnbd reports all as data.
func makeSparse(t *testing.T, path string) (dataSize int64, holes bool) {
	t.Helper()
	require.NoError(t, os.Truncate(path, 0))
	require.NoError(t, os.Truncate(path, imageSize))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	for _, e := range sparseExtents {
		_, err := io.CopyN(io.NewOffsetWriter(f, e[0]), rand.Reader, e[1])
		require.NoError(t, err)
		dataSize += e[1]
	}
	d, err := f.Seek(0, unix.SEEK_DATA)
	return dataSize, err == nil && d == sparseExtents[0][0]
}

// wantMap returns the image's extents as "offset length data|hole", one
// per run, as a client should see them.
func wantMap(holes bool) []string {
	if !holes {
		return []string{fmt.Sprintf("0 %d data", imageSize)}
	}
	var m []string
	var pos int64
	for _, e := range sparseExtents {
		if e[0] > pos {
			m = append(m, fmt.Sprintf("%d %d hole", pos, e[0]-pos))
		}
		m = append(m, fmt.Sprintf("%d %d data", e[0], e[1]))
		pos = e[0] + e[1]
	}
	return m
}

// TestMapShowsHoles checks that nbdinfo --map and qemu-img map see the
// holes of a sparse image through block status.
func TestMapShowsHoles(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo", "libnbd-bin")
	qemuImg := requireTool(t, "qemu-img", "qemu-utils")
	s := startTpnbd(t, imageSize, false)
	_, holes := makeSparse(t, s.file)
	want := wantMap(holes)
	require.Equal(t, want, nbdinfoMap(t, nbdinfo, s.uri), "nbdinfo --map")

	var extents []struct {
		Start, Length int64
		Data, Zero    bool
	}
	require.NoError(t, json.Unmarshal([]byte(runTool(t, qemuImg, "map", "--output=json", "-f", "raw", s.uri)), &extents))
	var got []string
	for _, e := range extents {
		require.Equal(t, !e.Data, e.Zero, "qemu-img map extent %+v", e)
		kind := "data"
		if !e.Data {
			kind = "hole"
		}
		got = append(got, fmt.Sprintf("%d %d %s", e.Start, e.Length, kind))
	}
	require.Equal(t, want, got, "qemu-img map")
}

// nbdinfoMap runs nbdinfo --map on uri and returns its extents as
// wantMap does.
func nbdinfoMap(t *testing.T, nbdinfo, uri string) []string {
	t.Helper()
	// nbdinfo prints "offset length type description" per extent.
	var got []string
	for line := range strings.Lines(runTool(t, nbdinfo, "--map", uri)) {
		f := strings.Fields(line)
		require.Len(t, f, 4, "nbdinfo --map line %q", line)
		kind := "data"
		switch f[2] {
		case "3":
			require.Equal(t, "hole,zero", f[3])
			kind = "hole"
		case "0":
			require.Equal(t, "data", f[3])
		default:
			t.Fatalf("nbdinfo --map line %q", line)
		}
		got = append(got, f[0]+" "+f[1]+" "+kind)
	}
	return got
}

// TestSparseCopyStaysSparse copies a sparse image out of tpnbd with
// qemu-img convert and nbdcopy: the copies are identical and stay sparse.
func TestSparseCopyStaysSparse(t *testing.T) {
	qemuImg := requireTool(t, "qemu-img", "qemu-utils")
	nbdcopy := requireTool(t, "nbdcopy", "libnbd-bin")
	s := startTpnbd(t, imageSize, false)
	dataSize, _ := makeSparse(t, s.file)
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		copy func(out string)
	}{
		{"qemu-img convert", func(out string) { runTool(t, qemuImg, "convert", "-f", "raw", "-O", "raw", s.uri, out) }},
		{"nbdcopy", func(out string) { runTool(t, nbdcopy, s.uri, out) }},
	} {
		out := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".img")
		tc.copy(out)
		requireSparseCopy(t, qemuImg, s.file, out, dataSize)
	}
}

// requireSparseCopy checks that copy holds the same bytes as the sparse
// image orig, which has dataSize bytes of data, and stays sparse: its
// allocated size is within 1 MiB of the data.
func requireSparseCopy(t *testing.T, qemuImg, orig, copy string, dataSize int64) {
	t.Helper()
	require.Contains(t, runTool(t, qemuImg, "compare", "-f", "raw", "-F", "raw", orig, copy), "identical", copy)
	var st unix.Stat_t
	require.NoError(t, unix.Stat(copy, &st))
	require.Equal(t, int64(imageSize), st.Size, copy)
	allocated := st.Blocks * 512
	require.GreaterOrEqual(t, allocated, dataSize, copy)
	require.Less(t, allocated, dataSize+1<<20, "%s: %d bytes allocated for %d of data", copy, allocated, dataSize)
}
