package nbd

import (
	"encoding/binary"
	"errors"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReadOnlyRefusesWrites(t *testing.T) {
	ts := startServer(t, serverConfig{size: 1 << 20, readOnly: true})
	c := dial(t, ts)
	info := c.connect("")
	require.NotZero(t, info.flags&tfReadOnly)
	require.Equal(t, uint32(errPerm), c.write(0, pattern(5, 4096), 0))
	require.Equal(t, uint32(errPerm), c.write(0, pattern(5, 4096), cmdFlagFUA))
	errno, _ := c.do(cmdTrim, 0, 0, 4096, nil)
	require.Equal(t, uint32(errPerm), errno)
	errno, _ = c.do(cmdWriteZeroes, 0, 0, 4096, nil)
	require.Equal(t, uint32(errPerm), errno)
	// The refused payload was consumed: the stream is still in step.
	errno, data := c.read(0, 4096)
	require.Zero(t, errno)
	require.Equal(t, pattern(0, 4096), data)
	errno, _ = c.do(cmdFlush, 0, 0, 0, nil)
	require.Zero(t, errno)
}

func TestOutOfBounds(t *testing.T) {
	const size = 1 << 20
	ts := startServer(t, serverConfig{size: size})
	c := dial(t, ts)
	c.connect("")
	for _, tc := range []struct {
		name   string
		typ    uint16
		off    uint64
		length uint32
		errno  uint32
	}{
		{"read past end", cmdRead, size - 100, 4096, errInval},
		{"read at end", cmdRead, size, 1, errInval},
		{"read offset wraps", cmdRead, ^uint64(0) - 10, 4096, errInval},
		{"trim past end", cmdTrim, size, 4096, errInval},
		{"write zeroes past end", cmdWriteZeroes, size - 1, 2, errNoSpc},
	} {
		errno, _ := c.do(tc.typ, 0, tc.off, tc.length, nil)
		require.Equal(t, tc.errno, errno, tc.name)
	}
	require.Equal(t, uint32(errNoSpc), c.write(size-4095, pattern(1, 4096), 0))
	require.Equal(t, uint32(errNoSpc), c.write(^uint64(0)-10, pattern(1, 4096), 0))
	errno, data := c.read(size-4096, 4096)
	require.Zero(t, errno)
	require.Equal(t, pattern(0, size)[size-4096:], data, "a refused write changed nothing")
}

func TestUnknownCommandsAndFlags(t *testing.T) {
	ts := startServer(t, serverConfig{size: 1 << 20})
	c := dial(t, ts)
	c.connect("")
	for _, typ := range []uint16{5, 7, 8, 9, 100, 0xffff} {
		errno, _ := c.do(typ, 0, 0, 4096, nil)
		require.Equal(t, uint32(errInval), errno, "type %d", typ)
	}
	for _, tc := range []struct{ typ, flags uint16 }{
		{cmdRead, cmdFlagNoHole},
		{cmdRead, 1 << 2},
		{cmdFlush, 1 << 15},
		{cmdTrim, cmdFlagNoHole},
		{cmdWriteZeroes, 1 << 4},
	} {
		errno, _ := c.do(tc.typ, tc.flags, 0, 4096, nil)
		require.Equal(t, uint32(errInval), errno, "type %d flags %#x", tc.typ, tc.flags)
	}
	// A write with an unknown flag still carries its payload.
	errno, _ := c.do(cmdWrite, 1<<9, 0, 4, []byte("abcd"))
	require.Equal(t, uint32(errInval), errno)
	errno, data := c.read(0, 4)
	require.Zero(t, errno)
	require.Equal(t, pattern(0, 4), data)
	// FUA is accepted on every command once advertised.
	errno, _ = c.do(cmdRead, cmdFlagFUA, 0, 4096, nil)
	require.Zero(t, errno)
}

func TestTooLargeRead(t *testing.T) {
	ts := startServer(t, serverConfig{size: MaxPayload + 1<<20})
	c := dial(t, ts)
	c.connect("")
	errno, _ := c.read(0, MaxPayload+1)
	require.Equal(t, uint32(errInval), errno)
	errno, data := c.read(0, MaxPayload)
	require.Zero(t, errno)
	require.Len(t, data, MaxPayload)
}

func TestTooLargeWriteDisconnects(t *testing.T) {
	ts := startServer(t, serverConfig{size: 1 << 20})
	c := dial(t, ts)
	c.connect("")
	cookie := c.request(cmdWrite, 0, 0, MaxPayload+1, make([]byte, 4096))
	got, errno, _ := c.reply()
	require.Equal(t, cookie, got)
	require.Equal(t, uint32(errInval), errno)
	c.expectEOF()
}

func TestBadRequestMagicDisconnects(t *testing.T) {
	ts := startServer(t, serverConfig{})
	c := dial(t, ts)
	c.connect("")
	hdr := make([]byte, requestHeaderLen)
	binary.BigEndian.PutUint32(hdr, 0xdeadbeef)
	c.send(hdr)
	c.expectEOF()
}

// readsThenBadMagic returns two reads of n bytes, at 0 and n, followed by a
// request header with a bad magic, and the reads' cookies.
func readsThenBadMagic(c *client, n uint32) ([]byte, map[uint64]bool) {
	var b []byte
	want := map[uint64]bool{}
	for i := range 2 {
		var cookie uint64
		b, cookie = c.appendRequest(b, cmdRead, 0, uint64(i)*uint64(n), n, nil)
		want[cookie] = true
	}
	bad := make([]byte, requestHeaderLen)
	binary.BigEndian.PutUint32(bad, 0xdeadbeef)
	return append(b, bad...), want
}

// Over TCP, the replies due before a bad request magic reach the client
// although it sent more after it, which the server never reads: the server
// discards that input until the client closes its side rather than close
// with it unread, which would reset the connection and drop the replies.
func TestBadRequestMagicRepliesSurviveUnreadInput(t *testing.T) {
	ts, c := smallWindowServer(t)
	const n = 64 << 10
	b, want := readsThenBadMagic(c, n)
	b = append(b, make([]byte, 256<<10)...) // more than the server reads
	wrote := make(chan error, 1)
	go func() {
		_, err := c.nc.Write(b)
		wrote <- errors.Join(err, c.nc.(*net.TCPConn).CloseWrite())
	}()
	expectReads(c, want, n)
	c.expectEOF()
	require.NoError(t, <-wrote)
	waitForgotten(t, ts)
}

func TestClientHangsUpMidRequest(t *testing.T) {
	ts := startServer(t, serverConfig{})
	c := dial(t, ts)
	c.connect("")
	hdr := make([]byte, requestHeaderLen)
	binary.BigEndian.PutUint32(hdr, magicRequest)
	binary.BigEndian.PutUint16(hdr[6:], cmdWrite)
	binary.BigEndian.PutUint32(hdr[24:], 4096)
	c.send(append(hdr, 1, 2, 3)) // a write whose payload never comes
	require.NoError(t, c.nc.Close())
	// The server notices, frees the buffer and ends the goroutines;
	// the cleanup's Shutdown and goleak check that.
}
