package nbd

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWriteReadRoundTrip(t *testing.T) {
	ts := startServer(t, serverConfig{size: 4 << 20})
	c := dial(t, ts)
	c.connect("")
	requireRoundTrips(t, c)
	errno, _ := c.read(0, 0)
	require.Zero(t, errno)
	require.Zero(t, c.write(0, nil, 0))
}

// requireRoundTrips writes and reads back sizes from 1 byte to 4 MiB,
// centred in an export of 4 MiB; the last write covers the whole export
// with pattern(6, 4 MiB).
func requireRoundTrips(t *testing.T, c *client) {
	t.Helper()
	for i, n := range []int{1, 511, 4096, 65536 + 3, 1 << 20, 4 << 20} {
		off := uint64((4<<20 - n) / 2)
		want := pattern(byte(i+1), n)
		require.Zero(t, c.write(off, want, 0))
		errno, got := c.read(off, uint32(n))
		require.Zero(t, errno)
		require.True(t, bytes.Equal(want, got), "size %d", n)
	}
}

func TestFUAAndFlushReachTheFile(t *testing.T) {
	ts := startServer(t, serverConfig{size: 1 << 20})
	c := dial(t, ts)
	c.connect("")
	want := pattern(9, 8192)
	require.Zero(t, c.write(4096, want, cmdFlagFUA))
	errno, _ := c.do(cmdFlush, 0, 0, 0, nil)
	require.Zero(t, errno)
	errno, _ = c.do(cmdFlush, cmdFlagFUA, 0, 0, nil)
	require.Zero(t, errno)
	got, err := os.ReadFile(ts.file)
	require.NoError(t, err)
	require.Equal(t, want, got[4096:4096+8192])
}

func TestTrimAndWriteZeroes(t *testing.T) {
	ts := startServer(t, serverConfig{size: 1 << 20})
	c := dial(t, ts)
	c.connect("")
	zero := make([]byte, 65536)
	for _, tc := range []struct {
		typ, flags uint16
		off        uint64
	}{
		{cmdTrim, 0, 0},
		{cmdTrim, cmdFlagFUA, 65536},
		{cmdWriteZeroes, 0, 3 * 65536},
		{cmdWriteZeroes, cmdFlagNoHole, 5 * 65536},
		{cmdWriteZeroes, cmdFlagNoHole | cmdFlagFUA, 7*65536 + 1},
	} {
		errno, _ := c.do(tc.typ, tc.flags, tc.off, 65536, nil)
		require.Zero(t, errno)
		if tc.typ == cmdWriteZeroes {
			// Trimmed ranges may keep their data; zeroed ones may not.
			errno, got := c.read(tc.off, 65536)
			require.Zero(t, errno)
			require.Equal(t, zero, got)
		}
	}
	errno, got := c.read(2*65536, 65536)
	require.Zero(t, errno)
	require.Equal(t, pattern(0, 3*65536)[2*65536:], got, "data beside a zeroed range is kept")
}

// TestWriteZeroesPastAShrunkEndExtendsTheFile checks that a write zeroes
// past the end of a file that shrank under the export (inside the export)
// extends the file again, as a write does, so that the range reads back as
// zeroes: fallocate keeps the file's size, and the range read as NBD_EIO.
func TestWriteZeroesPastAShrunkEndExtendsTheFile(t *testing.T) {
	const size, cut = 1 << 20, 512 << 10
	for _, flags := range []uint16{0, cmdFlagNoHole, cmdFlagFUA} {
		ts := startServer(t, serverConfig{size: size})
		c := dial(t, ts)
		c.connect("")
		require.NoError(t, os.Truncate(ts.file, cut))
		const off, n = 768 << 10, 4096
		errno, _ := c.do(cmdWriteZeroes, flags, off, n, nil)
		require.Zero(t, errno, "flags %#x", flags)
		errno, got := c.read(off, n)
		require.Zero(t, errno, "flags %#x: the zeroed range reads back", flags)
		require.Equal(t, make([]byte, n), got)
		errno, got = c.read(cut, off-cut)
		require.Zero(t, errno, "flags %#x: what lies between the cut and the range reads", flags)
		require.Equal(t, make([]byte, off-cut), got)
		st, err := os.Stat(ts.file)
		require.NoError(t, err)
		require.Equal(t, int64(off+n), st.Size(), "flags %#x: extended to the range's end, no further", flags)
	}
}

// TestTrimAndWriteZeroesOfLengthZero checks that a trim or write zeroes of
// no bytes, like a read or write of none, succeeds and changes nothing,
// wherever it lies in the export, the end included: it is not among the
// bad inputs that the server refuses.
func TestTrimAndWriteZeroesOfLengthZero(t *testing.T) {
	const size = 1 << 20
	ts := startServer(t, serverConfig{size: size})
	c := dial(t, ts)
	c.connect("")
	for _, tc := range []struct{ typ, flags uint16 }{
		{cmdTrim, 0},
		{cmdTrim, cmdFlagFUA},
		{cmdWriteZeroes, 0},
		{cmdWriteZeroes, cmdFlagNoHole},
		{cmdWriteZeroes, cmdFlagNoHole | cmdFlagFUA},
	} {
		for _, off := range []uint64{0, 4096, size} {
			errno, _ := c.do(tc.typ, tc.flags, off, 0, nil)
			require.Zero(t, errno, "type %d flags %#x at %d", tc.typ, tc.flags, off)
		}
	}
	got, err := os.ReadFile(ts.file)
	require.NoError(t, err)
	require.Equal(t, pattern(0, size), got)
}

func TestPipelinedRequests(t *testing.T) {
	ts := startServer(t, serverConfig{size: 1 << 20})
	c := dial(t, ts)
	c.connect("")
	const n = 200
	want := map[uint64]uint64{} // cookie -> offset
	for i := range n {
		off := uint64(i * 4096 % (1 << 20))
		want[c.request(cmdRead, 0, off, 4096, nil)] = off
	}
	file := pattern(0, 1<<20)
	for range n {
		cookie, errno, data := c.reply()
		require.Zero(t, errno)
		off, ok := want[cookie]
		require.True(t, ok, "unexpected cookie %d", cookie)
		delete(want, cookie)
		require.Equal(t, file[off:off+4096], data)
	}
	flushes, maxBatch := ts.exec.stats()
	require.LessOrEqual(t, flushes, n)
	require.Positive(t, maxBatch)
}

// TestOneFlushPerBatch checks that a batch of completions for one
// connection makes one deferred flush, not one per reply.
func TestOneFlushPerBatch(t *testing.T) {
	ts := startServer(t, serverConfig{size: 1 << 20})
	c := dial(t, ts)
	c.connect("")
	requireOneFlushPerBatch(t, ts, c, func() {
		_, errno, _ := c.reply()
		require.Zero(t, errno)
	})
}

// requireOneFlushPerBatch sends 4 KiB reads on c while the executor holds
// their completions back, then checks that they are delivered as one batch
// with one flush; readReply reads and checks one reply.
func requireOneFlushPerBatch(t *testing.T, ts *testServer, c *client, readReply func()) {
	t.Helper()
	flushesBefore, _ := ts.exec.stats()
	resume := ts.exec.pauseDelivery()
	const n = 32
	for i := range n {
		c.request(cmdRead, 0, uint64(i)*4096, 4096, nil)
	}
	ts.exec.waitCompleted(n)
	resume()
	for range n {
		readReply()
	}
	flushes, maxBatch := ts.exec.stats()
	require.Equal(t, 1, flushes-flushesBefore, "one flush for the batch")
	require.Equal(t, n, maxBatch)
}

func TestManyConnections(t *testing.T) {
	ts := startServer(t, serverConfig{size: 1 << 20})
	t.Run("group", func(t *testing.T) {
		for i := range 6 {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				c := dial(t, ts)
				c.connect("")
				off := uint64(i) * 65536 // each connection owns a range
				for j := range 20 {
					data := pattern(byte(i*31+j), 65536)
					require.Zero(t, c.write(off, data, 0))
					errno, got := c.read(off, 65536)
					require.Zero(t, errno)
					require.Equal(t, data, got)
				}
			})
		}
	})
}

// TestUnixSocketTakesAFullQueueOfReplies checks that the replies to 64
// pipelined 4 KiB reads, which the client does not read yet, all go into
// the Unix socket at once (its send buffer is enlarged) instead of waiting
// for the connection's writer goroutine.
func TestUnixSocketTakesAFullQueueOfReplies(t *testing.T) {
	ts := startServer(t, serverConfig{size: 1 << 20})
	c := dial(t, ts)
	c.connect("")
	const depth = 64
	for i := range depth {
		c.request(cmdRead, 0, uint64(i)*4096, 4096, nil)
	}
	ts.exec.waitSubmitted(depth)
	ts.exec.stats() // every reply flushed
	var conns, busy, queued int
	ts.srv.mu.Lock()
	for sc := range ts.srv.conns {
		conns++
		sc.out.mu.Lock()
		if sc.out.busy {
			busy++
		}
		queued += len(sc.out.queue)
		sc.out.mu.Unlock()
	}
	ts.srv.mu.Unlock()
	require.Equal(t, 1, conns)
	require.Zero(t, busy, "replies left for the writer goroutine")
	require.Zero(t, queued)
	for range depth {
		_, errno, data := c.reply()
		require.Zero(t, errno)
		require.Len(t, data, 4096)
	}
}

// TestPipelinedMixGetsOneReplyEach sends 400 requests in one burst, valid
// and invalid mixed (every command, unknown ones, bad flags, lengths from 0
// to 2^32-1, offsets past the end), then NBD_CMD_DISC, under a small budget
// so that the reader waits for room, with simple and structured replies,
// inline serving on and off, over Unix sockets and TCP, in the clear and
// over TLS. Every request but the DISC gets exactly one reply with its own
// cookie (a structured one ends with a chunk flagged done), reads and block
// status never get a simple reply once structured replies are on, and the
// server closes the connection after the DISC. The requests come from a
// seeded generator, the same on every run.
func TestPipelinedMixGetsOneReplyEach(t *testing.T) {
	seed := uint64(0)
	for _, structured := range []bool{false, true} {
		for _, inline := range []bool{false, true} {
			for _, tcp := range []bool{false, true} {
				for _, overTLS := range []bool{false, true} {
					seed++
					name := fmt.Sprintf("structured=%v/inline=%v/tcp=%v/tls=%v", structured, inline, tcp, overTLS)
					t.Run(name, func(t *testing.T) {
						pipelinedMix(t, seed, structured, inline, tcp, overTLS)
					})
				}
			}
		}
	}
}

func pipelinedMix(t *testing.T, seed uint64, structured, inline, tcp, overTLS bool) {
	const size = 1 << 20
	certs := newTLSCerts(t)
	ts := startServer(t, serverConfig{size: size, tcp: tcp, tune: func(s *Server) {
		certs.tlsServer(TLSOn, false)(s)
		s.Inline = inline
		s.MaxRequests = 8
		s.MaxBytes = 256 << 10
	}})
	c := dial(t, ts)
	c.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	if overTLS {
		require.NoError(t, c.startTLS(certs.clientConfig(nil)))
	}
	if structured {
		c.connectStructured2()
	} else {
		c.connect2()
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	types := []uint16{cmdRead, cmdRead, cmdRead, cmdWrite, cmdWrite, cmdFlush, cmdTrim, cmdWriteZeroes, cmdBlockStatus, 5, 8, 0xffff}
	flagSets := []uint16{0, 0, 0, cmdFlagFUA, cmdFlagNoHole, cmdFlagReqOne, 1 << 2}
	lens := []uint32{0, 1, 512, 4096, 65536, 70000, 300000}
	var b []byte
	want := map[uint64]uint16{}    // outstanding requests' types, by cookie
	lengths := map[uint64]uint32{} // and their lengths
	for range 400 {
		typ := types[rng.IntN(len(types))]
		flags := flagSets[rng.IntN(len(flagSets))]
		off := uint64(rng.IntN(size + size/8))
		length := lens[rng.IntN(len(lens))]
		if typ != cmdWrite && rng.IntN(10) == 0 {
			length = ^uint32(0)
		}
		var payload []byte
		if typ == cmdWrite {
			payload = pattern(byte(rng.IntN(256)), int(length))
		}
		var cookie uint64
		b, cookie = c.appendRequest(b, typ, flags, off, length, payload)
		delete(c.readLens, cookie) // the replies are read here
		want[cookie] = typ
		lengths[cookie] = length
	}
	b, _ = c.appendRequest(b, cmdDisc, 0, 0, 0, nil)
	sent := make(chan error, 1)
	go func() { _, err := c.nc.Write(b); sent <- err }()
	for len(want) > 0 {
		switch magic := c.u32(); magic {
		case magicSimpleReply:
			errno := c.u32()
			cookie := c.u64()
			typ, ok := want[cookie]
			require.True(t, ok, "a simple reply to cookie %d, which is not outstanding", cookie)
			delete(want, cookie)
			if structured {
				require.False(t, typ == cmdRead || typ == cmdBlockStatus, "a simple reply to command %d", typ)
			}
			if typ == cmdRead && errno == 0 {
				c.full(make([]byte, lengths[cookie]))
			}
		case magicStructuredReply:
			flags := c.u16()
			c.u16() // the chunk's type
			cookie := c.u64()
			n := c.u32()
			typ, ok := want[cookie]
			require.True(t, ok, "a chunk for cookie %d, which is not outstanding", cookie)
			require.True(t, structured, "a chunk without structured replies")
			require.True(t, typ == cmdRead || typ == cmdBlockStatus, "a chunk for command %d", typ)
			require.Less(t, n, uint32(MaxPayload+64))
			c.full(make([]byte, n))
			if flags&replyFlagDone != 0 {
				delete(want, cookie)
			}
		default:
			require.Failf(t, "bad reply", "magic %#x", magic)
		}
	}
	require.NoError(t, <-sent)
	c.expectEOF()
}
