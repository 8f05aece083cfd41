package nbd

import (
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// inlineServer starts a server with Server.Inline set.
func inlineServer(t *testing.T) *testServer {
	return startServer(t, serverConfig{size: 1 << 20, tune: func(s *Server) { s.Inline = true }})
}

// readOneChunk reads with structured replies, as read does with simple
// ones, and checks that the reply is one data chunk.
func (c *client) readOneChunk(off uint64, length uint32) (uint32, []byte) {
	c.t.Helper()
	res := c.readChunks(0, off, length)
	require.Nil(c.t, res.err)
	require.Equal(c.t, []uint16{replyTypeOffsetData}, res.types)
	return 0, res.data
}

// cachedReadsInline reports whether a read of cached data can be served
// inline here: only Linux has RWF_NOWAIT.
const cachedReadsInline = runtime.GOOS == "linux"

// TestInlineServesLoneRequests checks that, with Server.Inline, a write
// without FUA and a read of cached data that a connection receives with
// nothing else in flight are answered without the executor, correctly,
// with simple and with structured replies; a FUA write and a read of 64 KiB
// still go to the executor.
func TestInlineServesLoneRequests(t *testing.T) {
	for _, structured := range []bool{false, true} {
		t.Run(fmt.Sprintf("structured=%v", structured), func(t *testing.T) {
			ts := inlineServer(t)
			c := dial(t, ts)
			read := c.read
			if structured {
				c.connectStructured()
				read = c.readOneChunk
			} else {
				c.connect("")
			}
			const n = 8
			for i := range n {
				require.Zero(t, c.write(uint64(i)*4096+100, pattern(byte(i+1), 4096), 0))
				errno, data := read(uint64(i)*4096+100, 4096)
				require.Zero(t, errno)
				require.Equal(t, pattern(byte(i+1), 4096), data)
			}
			want := 0
			if !cachedReadsInline {
				want = n // the reads
			}
			require.Equal(t, want, ts.exec.submittedCount())

			require.Zero(t, c.write(0, pattern(9, 4096), cmdFlagFUA))
			errno, data := read(0, 64<<10)
			require.Zero(t, errno)
			require.Equal(t, pattern(9, 4096), data[:4096])
			require.Equal(t, want+2, ts.exec.submittedCount())
		})
	}
}

// TestInlineOnlyWhenIdle checks that a request arriving while another is
// in flight goes to the executor, and that both replies arrive.
func TestInlineOnlyWhenIdle(t *testing.T) {
	ts := inlineServer(t)
	c := dial(t, ts)
	c.connect("")
	release := ts.exec.holdWork()
	first := c.request(cmdWrite, cmdFlagFUA, 0, 4096, pattern(3, 4096))
	ts.exec.waitSubmitted(1)
	second := c.request(cmdRead, 0, 8192, 4096, nil)
	ts.exec.waitSubmitted(2)
	release()
	got := map[uint64][]byte{}
	for range 2 {
		cookie, errno, data := c.reply()
		require.Zero(t, errno)
		got[cookie] = data
	}
	require.Contains(t, got, first)
	require.Equal(t, pattern(0, 1<<20)[8192:8192+4096], got[second])
	require.Equal(t, 2, ts.exec.submittedCount())
}

// TestInlineRefusedRequestsUseExecutor checks that a request refused
// before any I/O keeps its error reply through the executor.
func TestInlineRefusedRequestsUseExecutor(t *testing.T) {
	ts := inlineServer(t)
	c := dial(t, ts)
	c.connect("")
	errno, _ := c.read(1<<20, 4096)
	require.Equal(t, uint32(errInval), errno)
	require.Equal(t, uint32(errNoSpc), c.write(1<<20, pattern(1, 4096), 0))
	require.Equal(t, 2, ts.exec.submittedCount())
}

// TestInlineDoesNotAllocate checks that lone requests served inline
// allocate nothing in steady state, with simple and structured replies.
func TestInlineDoesNotAllocate(t *testing.T) {
	ts := inlineServer(t)
	c := dial(t, ts)
	c.connect("")
	requireNoAllocsPerRead(t, c, replyHeaderLen+4096, 1)
	s := dial(t, ts)
	s.connectStructured()
	requireNoAllocsPerRead(t, s, chunkHeaderLen+8+4096, 1)
	if cachedReadsInline {
		require.Zero(t, ts.exec.submittedCount())
	}
}

// TestInlineOverTLS checks that lone requests served inline over TLS get
// their replies through TLS, with simple and structured replies, and with
// simple ones when structured replies were negotiated only before
// STARTTLS (which forgets them). A reply written to the socket beside TLS
// would break the client's TLS stream.
func TestInlineOverTLS(t *testing.T) {
	certs := newTLSCerts(t)
	for _, tc := range []struct {
		name                    string
		mode                    TLSMode
		structuredBefore, after bool
	}{
		{"simple", TLSRequire, false, false},
		{"structured", TLSRequire, false, true},
		{"structured before STARTTLS only", TLSOn, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, serverConfig{size: 1 << 20, tune: func(s *Server) {
				certs.tlsServer(tc.mode, false)(s)
				s.Inline = true
			}})
			c := dialFixed(t, ts)
			if tc.structuredBefore {
				c.structuredReply()
			}
			require.NoError(t, c.startTLS(certs.clientConfig(nil)))
			read := c.read // checks the simple reply's magic
			if tc.after {
				c.connectStructured2()
				read = c.readOneChunk
			} else {
				c.connect2()
			}
			const n = 8
			for i := range n {
				want := pattern(byte(i+1), 4096+i)
				require.Zero(t, c.write(uint64(i)*8192+100, want, 0))
				errno, data := read(uint64(i)*8192+100, uint32(len(want)))
				require.Zero(t, errno)
				require.Equal(t, want, data)
			}
			want := 0
			if !cachedReadsInline {
				want = n // the reads
			}
			require.Equal(t, want, ts.exec.submittedCount(), "lone requests served inline")
		})
	}
}

// TestInlineOverTLSOneWritePerReply checks that a reply written inline
// over TLS, several TLS records long, leaves in one write to the socket.
func TestInlineOverTLSOneWritePerReply(t *testing.T) {
	certs := newTLSCerts(t)
	var writes atomic.Int64
	ts := startServer(t, serverConfig{
		size: 1 << 20,
		tune: func(s *Server) {
			certs.tlsServer(TLSRequire, false)(s)
			s.Inline = true
		},
		listen: func(l net.Listener) net.Listener { return countingListener{l, &writes} },
	})
	c := dialFixed(t, ts)
	require.NoError(t, c.startTLS(certs.clientConfig(nil)))
	c.connect2()
	const n = 60 << 10 // 4 TLS records, under sparseReadMin
	want := pattern(7, n)
	for range 2 {
		require.Zero(t, c.write(4096, want, 0))
		before := writes.Load()
		errno, data := c.read(4096, n)
		require.Zero(t, errno)
		require.Equal(t, want, data)
		require.Equal(t, int64(1), writes.Load()-before, "one write for the reply")
	}
	if cachedReadsInline {
		require.Zero(t, ts.exec.submittedCount(), "lone requests served inline")
	}
}

// TestInlineServesPipelinedWrites checks that writes without FUA that a
// client sends back to back, without waiting for replies, are served by
// the connection's goroutine, every one replied to, with budgets small
// enough that the replies must be sent before the budget runs out.
func TestInlineServesPipelinedWrites(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxReqs  int
		maxBytes int64
	}{
		{"default budget", 0, 0},
		{"4 requests", 4, 0},
		{"8 KiB", 0, 8 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, serverConfig{size: 1 << 20, tune: func(s *Server) {
				s.Inline, s.MaxRequests, s.MaxBytes = true, tc.maxReqs, tc.maxBytes
			}})
			c := dial(t, ts)
			c.connect("")
			pipelineWrites(t, c, 200) // more than inlineRun
			require.Zero(t, ts.exec.submittedCount())
		})
	}
}

// pipelineWrites sends n 4 KiB writes without FUA in one go, to the first
// 256 blocks of the export, checks that each gets its reply, then reads the
// blocks back.
func pipelineWrites(t *testing.T, c *client, n int) {
	t.Helper()
	var b []byte
	cookies := map[uint64]bool{}
	for i := range n {
		var cookie uint64
		b, cookie = c.appendRequest(b, cmdWrite, 0, uint64(i%256)*4096, 4096, pattern(byte(i), 4096))
		cookies[cookie] = true
	}
	c.send(b)
	for range n {
		cookie, errno, _ := c.reply()
		require.Zero(t, errno)
		require.True(t, cookies[cookie], "reply to cookie %d", cookie)
		delete(cookies, cookie)
	}
	for i := max(0, n-256); i < n; i++ { // the last write to each block
		errno, data := c.read(uint64(i%256)*4096, 4096)
		require.Zero(t, errno)
		require.Equal(t, pattern(byte(i), 4096), data)
	}
}

// TestInlineServesPipelinedWritesOverTLS checks pipelined writes served
// inline over TLS, where their replies go through TLS in one write.
func TestInlineServesPipelinedWritesOverTLS(t *testing.T) {
	certs := newTLSCerts(t)
	ts := startServer(t, serverConfig{size: 1 << 20, tune: func(s *Server) {
		certs.tlsServer(TLSRequire, false)(s)
		s.Inline = true
	}})
	c := dialFixed(t, ts)
	require.NoError(t, c.startTLS(certs.clientConfig(nil)))
	c.connect2()
	pipelineWrites(t, c, 200)
	require.Zero(t, ts.exec.submittedCount())
}

// TestInlineSendsBeforeTheExecutor checks that the replies of pipelined
// writes served inline are sent before a request goes to the executor
// (which may then send replies on the same socket), and that requests
// arriving while one is in flight go to the executor too, reads included.
func TestInlineSendsBeforeTheExecutor(t *testing.T) {
	ts := inlineServer(t)
	c := dial(t, ts)
	c.connect("")
	release := ts.exec.holdWork()
	var b []byte
	b, w1 := c.appendRequest(b, cmdWrite, 0, 0, 4096, pattern(1, 4096))
	b, w2 := c.appendRequest(b, cmdWrite, 0, 4096, 4096, pattern(2, 4096))
	b, fua := c.appendRequest(b, cmdWrite, cmdFlagFUA, 8192, 4096, pattern(3, 4096))
	b, w3 := c.appendRequest(b, cmdWrite, 0, 12288, 4096, pattern(4, 4096))
	b, rd := c.appendRequest(b, cmdRead, 0, 0, 4096, nil)
	c.send(b)
	// The FUA write is held in the executor; the two writes before it were
	// served inline and their replies must already be on their way.
	got := map[uint64]bool{}
	for range 2 {
		cookie, errno, _ := c.reply()
		require.Zero(t, errno)
		got[cookie] = true
	}
	require.Equal(t, map[uint64]bool{w1: true, w2: true}, got)
	ts.exec.waitSubmitted(3)
	release()
	var data []byte
	for range 3 {
		cookie, errno, d := c.reply()
		require.Zero(t, errno)
		got[cookie] = true
		if cookie == rd {
			data = d
		}
	}
	require.Len(t, got, 5)
	require.True(t, got[fua] && got[w3] && got[rd])
	require.Equal(t, pattern(1, 4096), data)
	require.Equal(t, 3, ts.exec.submittedCount())
}

// TestInlineServesPipelinedCachedReads checks that cached reads sent back
// to back are served inline too (Linux), and that all their replies
// arrive with the right data.
func TestInlineServesPipelinedCachedReads(t *testing.T) {
	ts := inlineServer(t)
	c := dial(t, ts)
	c.connect("")
	want := pattern(5, 32<<10)
	require.Zero(t, c.write(0, want, 0)) // lone: inline, and cached
	var b []byte
	const n = 8
	offsets := map[uint64]uint64{}
	for i := range n {
		var cookie uint64
		b, cookie = c.appendRequest(b, cmdRead, 0, uint64(i)*4096, 4096, nil)
		offsets[cookie] = uint64(i) * 4096
	}
	c.send(b)
	for range n {
		cookie, errno, data := c.reply()
		require.Zero(t, errno)
		off, ok := offsets[cookie]
		require.True(t, ok, "reply to cookie %d", cookie)
		require.Equal(t, want[off:off+4096], data)
	}
	wantSubmitted := 0
	if !cachedReadsInline {
		wantSubmitted = n
	}
	require.Equal(t, wantSubmitted, ts.exec.submittedCount())
}

// TestInlineOverTLSKeepsReadingWhileRepliesWait checks that the replies of
// pipelined requests served inline over TLS, more than the socket takes at
// once, do not keep the connection's goroutine from reading the requests
// behind them: a client that sends a batch of cached reads and writes and
// reads the replies only once its send is done is served over TLS as it is
// in plain text, rather than left with both sides waiting until the write
// timeout drops it.
func TestInlineOverTLSKeepsReadingWhileRepliesWait(t *testing.T) {
	certs := newTLSCerts(t)
	ts := startServer(t, serverConfig{size: 8 << 20, tune: func(s *Server) {
		certs.tlsServer(TLSRequire, false)(s)
		s.Inline = true
		s.WriteTimeout = 10 * time.Second // bounds the wait of the failure
	}})
	c := dialFixed(t, ts)
	require.NoError(t, c.startTLS(certs.clientConfig(nil)))
	c.connect2()
	const n = 60 << 10 // under sparseReadMin: cached reads are served inline
	const depth = 64   // inlineRun: the replies to the reads go out before the writes
	want := pattern(1, depth*n)
	require.Zero(t, c.write(0, want, 0)) // now in the page cache
	var b []byte
	reads := map[uint64]uint64{}
	for i := range depth {
		var cookie uint64
		b, cookie = c.appendRequest(b, cmdRead, 0, uint64(i)*n, n, nil)
		reads[cookie] = uint64(i) * n
	}
	for i := range depth { // more than the socket buffers hold
		b, _ = c.appendRequest(b, cmdWrite, 0, 4<<20+uint64(i)*n, n, pattern(byte(i), n))
	}
	_, err := c.nc.Write(b)
	require.NoError(t, err, "the server read the whole batch")
	for range 2 * depth {
		cookie, errno, data := c.reply()
		require.Zero(t, errno)
		if off, ok := reads[cookie]; ok {
			require.Equal(t, want[off:off+n], data)
		}
	}
}
