package nbd

import (
	"context"
	"encoding/binary"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// chunk is one structured reply chunk.
type chunk struct {
	flags, typ uint16
	payload    []byte
}

// chunks reads the chunks of one reply, up to the one marked DONE, and
// checks that they all answer cookie.
func (c *client) chunks(cookie uint64) []chunk {
	c.t.Helper()
	var cs []chunk
	for {
		require.Equal(c.t, uint32(magicStructuredReply), c.u32())
		ch := chunk{flags: c.u16(), typ: c.u16()}
		require.Equal(c.t, cookie, c.u64())
		ch.payload = make([]byte, c.u32())
		c.full(ch.payload)
		cs = append(cs, ch)
		if ch.flags&replyFlagDone != 0 {
			return cs
		}
		require.Zero(c.t, ch.flags, "unknown chunk flags")
	}
}

// chunkError is what an error chunk says.
type chunkError struct {
	errno  uint32
	msg    string
	offset uint64 // NBD_REPLY_TYPE_ERROR_OFFSET only
}

// parseError decodes an error chunk, checking its lengths.
func (c *client) parseError(ch chunk) chunkError {
	c.t.Helper()
	p := ch.payload
	require.GreaterOrEqual(c.t, len(p), 6)
	e := chunkError{errno: binary.BigEndian.Uint32(p)}
	require.NotZero(c.t, e.errno)
	n := int(binary.BigEndian.Uint16(p[4:]))
	require.LessOrEqual(c.t, n, len(p)-6)
	e.msg = string(p[6 : 6+n])
	switch ch.typ {
	case replyTypeError:
		require.Len(c.t, p, 6+n)
	case replyTypeErrorOffset:
		require.Len(c.t, p, 6+n+8)
		e.offset = binary.BigEndian.Uint64(p[6+n:])
	default:
		c.t.Fatalf("chunk type %#x is not an error", ch.typ)
	}
	return e
}

// readResult is a structured read reply, reassembled.
type readResult struct {
	data  []byte      // content; bytes no chunk covered are zero
	types []uint16    // chunk types in the order sent
	err   *chunkError // the error chunk, if any
	wire  int         // bytes on the wire, headers included
	holes [][2]uint64 // offset and length of each hole chunk
}

// readChunks sends a read and reassembles its structured reply, checking
// the protocol's rules: content chunks of at least one byte within the
// request and not overlapping, DONE on the last chunk only, and, without
// an error, the whole range covered.
func (c *client) readChunks(flags uint16, off uint64, length uint32) readResult {
	c.t.Helper()
	cookie := c.request(cmdRead, flags, off, length, nil)
	delete(c.readLens, cookie)
	res := readResult{data: make([]byte, length)}
	covered := make([]bool, length)
	cover := func(at uint64, n uint32) []byte {
		require.NotZero(c.t, n, "empty content chunk")
		require.GreaterOrEqual(c.t, at, off)
		require.LessOrEqual(c.t, at+uint64(n), off+uint64(length), "chunk past the request")
		rel := at - off
		for i := range uint64(n) {
			if covered[rel+i] {
				c.t.Fatalf("overlapping chunks at %d", at+i)
			}
			covered[rel+i] = true
		}
		return res.data[rel : rel+uint64(n)]
	}
	for _, ch := range c.chunks(cookie) {
		res.types = append(res.types, ch.typ)
		res.wire += chunkHeaderLen + len(ch.payload)
		switch ch.typ {
		case replyTypeOffsetData:
			require.Greater(c.t, len(ch.payload), 8)
			at := binary.BigEndian.Uint64(ch.payload)
			copy(cover(at, uint32(len(ch.payload)-8)), ch.payload[8:])
		case replyTypeOffsetHole:
			require.Len(c.t, ch.payload, 12)
			at := binary.BigEndian.Uint64(ch.payload)
			n := binary.BigEndian.Uint32(ch.payload[8:])
			clear(cover(at, n))
			res.holes = append(res.holes, [2]uint64{at, uint64(n)})
		case replyTypeNone:
			require.Empty(c.t, ch.payload)
		default:
			e := c.parseError(ch)
			res.err = &e
		}
	}
	if res.err == nil {
		for i, ok := range covered {
			if !ok {
				c.t.Fatalf("byte %d of the read not covered", i)
			}
		}
	}
	return res
}

// extent is one base:allocation descriptor.
type extent struct{ length, flags uint32 }

// blockStatus sends NBD_CMD_BLOCK_STATUS and returns the context ID and
// descriptors of its reply, or its error chunk.
func (c *client) blockStatus(flags uint16, off uint64, length uint32) (uint32, []extent, *chunkError) {
	c.t.Helper()
	cookie := c.request(cmdBlockStatus, flags, off, length, nil)
	cs := c.chunks(cookie)
	require.Len(c.t, cs, 1, "one chunk per selected context")
	if cs[0].typ != replyTypeBlockStatus {
		e := c.parseError(cs[0])
		return 0, nil, &e
	}
	p := cs[0].payload
	require.Greater(c.t, len(p), 4)
	require.Zero(c.t, (len(p)-4)%8)
	var exts []extent
	for d := p[4:]; len(d) > 0; d = d[8:] {
		e := extent{binary.BigEndian.Uint32(d), binary.BigEndian.Uint32(d[4:])}
		require.NotZero(c.t, e.length)
		exts = append(exts, e)
	}
	return binary.BigEndian.Uint32(p), exts, nil
}

// metaData encodes the data of the metadata context options.
func metaData(name string, queries ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// metaReplies reads the replies to a metadata context option up to the
// final one, returning the contexts (ID and name) and the final type.
func (c *client) metaReplies(opt uint32) (map[string]uint32, uint32) {
	c.t.Helper()
	ctxs := map[string]uint32{}
	for {
		typ, data := c.optReply(opt)
		if typ != repMetaContext {
			return ctxs, typ
		}
		require.Greater(c.t, len(data), 4)
		name := string(data[4:])
		_, dup := ctxs[name]
		require.False(c.t, dup, "context %q twice", name)
		ctxs[name] = binary.BigEndian.Uint32(data)
	}
}

// structuredReply negotiates structured replies.
func (c *client) structuredReply() {
	c.t.Helper()
	c.option(optStructuredReply, nil)
	typ, data := c.optReply(optStructuredReply)
	require.Equal(c.t, uint32(repAck), typ, "%s", data)
}

// connectStructured greets, negotiates structured replies and
// base:allocation, and enters transmission.
func (c *client) connectStructured() exportInfo {
	c.t.Helper()
	c.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	return c.connectStructured2()
}

// connectStructured2 negotiates structured replies and base:allocation on
// a connection already greeted, and enters transmission.
func (c *client) connectStructured2() exportInfo {
	c.t.Helper()
	c.structuredReply()
	c.option(optSetMetaContext, metaData("", baseAllocation))
	ctxs, typ := c.metaReplies(optSetMetaContext)
	require.Equal(c.t, uint32(repAck), typ)
	require.Equal(c.t, map[string]uint32{baseAllocation: baseAllocationID}, ctxs)
	return c.connect2()
}

// sparseSize and sparseData lay out the file of the sparse tests: 1 MiB
// with data at [0, 64K) and [256K, 320K), holes elsewhere (the trailing
// one up to the end of the file).
const sparseSize = 1 << 20

var sparseData = [][2]int64{{0, 64 << 10}, {256 << 10, 64 << 10}}

// makeSparse rewrites path (already exported) with the sparse layout's
// holes and data and returns its content and whether the file system reports
// the holes (SEEK_HOLE); where it does not, the server reports everything
// as data.
func makeSparse(t *testing.T, path string) (content []byte, holes bool) {
	t.Helper()
	require.NoError(t, os.Truncate(path, 0))
	require.NoError(t, os.Truncate(path, sparseSize))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	content = make([]byte, sparseSize)
	for i, d := range sparseData {
		b := pattern(byte(i+1), int(d[1]))
		_, err := f.WriteAt(b, d[0])
		require.NoError(t, err)
		copy(content[d[0]:], b)
	}
	h, err := f.Seek(0, unix.SEEK_HOLE)
	return content, err == nil && h == sparseData[0][1]
}

func TestStructuredReplyNegotiation(t *testing.T) {
	ts := startServer(t, serverConfig{size: 1 << 20})
	c := dial(t, ts)
	c.greet(clientFlagFixedNewstyle)
	c.option(optStructuredReply, []byte{0})
	typ, msg := c.optReply(optStructuredReply)
	require.Equal(t, uint32(repErrInvalid), typ)
	require.NotEmpty(t, msg)
	c.structuredReply()
	c.option(optStructuredReply, nil)
	typ, msg = c.optReply(optStructuredReply)
	require.Equal(t, uint32(repErrInvalid), typ, "a second STRUCTURED_REPLY")
	require.Contains(t, string(msg), "already")
	c.connect2()

	// Reads get chunks; writes and flushes keep simple replies.
	require.Zero(t, c.write(4096, pattern(3, 4096), cmdFlagFUA))
	res := c.readChunks(0, 4096, 4096)
	require.Nil(t, res.err)
	require.Equal(t, []uint16{replyTypeOffsetData}, res.types)
	require.Equal(t, pattern(3, 4096), res.data)
	res = c.readChunks(cmdFlagFUA, 0, 0)
	require.Equal(t, []uint16{replyTypeNone}, res.types, "an empty read")
	errno, _ := c.do(cmdFlush, 0, 0, 0, nil)
	require.Zero(t, errno)
}

func TestSimpleRepliesOnly(t *testing.T) {
	ts := startServer(t, serverConfig{tune: func(s *Server) { s.SimpleRepliesOnly = true }})
	c := dial(t, ts)
	c.greet(clientFlagFixedNewstyle)
	for _, opt := range []uint32{optStructuredReply, optListMetaContext, optSetMetaContext} {
		c.option(opt, nil)
		typ, _ := c.optReply(opt)
		require.Equal(t, uint32(repErrUnsup), typ, "option %d", opt)
	}
	c.connect2()
	errno, data := c.read(0, 4096)
	require.Zero(t, errno)
	require.Equal(t, pattern(0, 4096), data)
	errno, _ = c.do(cmdBlockStatus, 0, 0, 4096, nil)
	require.Equal(t, uint32(errInval), errno, "an unknown command without structured replies")
}

func TestMetaContextNegotiation(t *testing.T) {
	ts := startServer(t, serverConfig{name: "disk"})
	c := dial(t, ts)
	c.greet(clientFlagFixedNewstyle)
	for _, tc := range []struct {
		queries []string
		want    map[string]uint32
	}{
		{nil, map[string]uint32{baseAllocation: 0}},
		{[]string{"base:"}, map[string]uint32{baseAllocation: 0}},
		{[]string{"x-other:thing", baseAllocation}, map[string]uint32{baseAllocation: 0}},
		{[]string{"x-other:thing", "base:other", "qemu:dirty-bitmap:a"}, map[string]uint32{}},
	} {
		c.option(optListMetaContext, metaData("disk", tc.queries...))
		ctxs, typ := c.metaReplies(optListMetaContext)
		require.Equal(t, uint32(repAck), typ, "%q", tc.queries)
		require.Equal(t, tc.want, ctxs, "%q", tc.queries)
	}
	c.option(optSetMetaContext, metaData("disk", baseAllocation))
	typ, _ := c.optReply(optSetMetaContext)
	require.Equal(t, uint32(repErrInvalid), typ, "SET_META_CONTEXT before STRUCTURED_REPLY")

	c.structuredReply()
	for _, tc := range []struct {
		queries []string
		want    map[string]uint32
	}{
		{nil, map[string]uint32{}},
		{[]string{"base:"}, map[string]uint32{}},
		{[]string{"x-other:thing"}, map[string]uint32{}},
		{[]string{"x-other:thing", baseAllocation, baseAllocation}, map[string]uint32{baseAllocation: baseAllocationID}},
	} {
		c.option(optSetMetaContext, metaData("", tc.queries...))
		ctxs, typ := c.metaReplies(optSetMetaContext)
		require.Equal(t, uint32(repAck), typ, "%q", tc.queries)
		require.Equal(t, tc.want, ctxs, "%q", tc.queries)
	}
	c.connect2()
	id, exts, cerr := c.blockStatus(0, 0, 1<<20)
	require.Nil(t, cerr)
	require.Equal(t, uint32(baseAllocationID), id)
	require.NotEmpty(t, exts)
}

// sparseConn serves the sparse layout and returns a connection that
// negotiated structured replies and base:allocation, with makeSparse's
// results.
func sparseConn(t *testing.T) (c *client, content []byte, holes bool) {
	t.Helper()
	ts := startServer(t, serverConfig{size: sparseSize})
	content, holes = makeSparse(t, ts.file)
	c = dial(t, ts)
	c.connectStructured()
	return c, content, holes
}

// rangeCase is a request of the table-driven tests.
type rangeCase struct {
	name   string
	flags  uint16
	off    uint64
	length uint32
}

func TestBlockStatus(t *testing.T) {
	c, _, holes := sparseConn(t)
	const k = 1 << 10
	hole := uint32(stateHole | stateZero)
	for _, tc := range []struct {
		name   string
		flags  uint16
		off    uint64
		length uint32
		want   []extent
	}{
		{"whole export", 0, 0, sparseSize, []extent{{64 * k, 0}, {192 * k, hole}, {64 * k, 0}, {704 * k, hole}}},
		{"one extent", cmdFlagReqOne, 0, sparseSize, []extent{{64 * k, 0}}},
		{"one extent, cut at the length", cmdFlagReqOne | cmdFlagFUA, 100 * k, 50 * k, []extent{{50 * k, hole}}},
		{"unaligned", 0, 1000, 64 * k, []extent{{64*k - 1000, 0}, {1000, hole}}},
		{"the trailing hole", 0, 320 * k, 704 * k, []extent{{704 * k, hole}}},
		{"last byte", 0, sparseSize - 1, 1, []extent{{1, hole}}},
	} {
		want := tc.want
		if !holes {
			want = []extent{{tc.length, 0}} // everything is data
		}
		id, exts, cerr := c.blockStatus(tc.flags, tc.off, tc.length)
		require.Nil(t, cerr, tc.name)
		require.Equal(t, uint32(baseAllocationID), id, tc.name)
		require.Equal(t, want, exts, tc.name)
	}
	// Writing into a hole makes it data.
	require.Zero(t, c.write(128*k, pattern(9, 4096), 0))
	_, exts, cerr := c.blockStatus(cmdFlagReqOne, 128*k, 4096)
	require.Nil(t, cerr)
	require.Equal(t, []extent{{4096, 0}}, exts)
}

func TestStructuredReadSkipsHoles(t *testing.T) {
	c, content, holes := sparseConn(t)
	const k = 1 << 10
	for _, tc := range []struct {
		name   string
		off    uint64
		length uint32
		types  []uint16
		holes  [][2]uint64
	}{
		{"whole export", 0, sparseSize,
			[]uint16{replyTypeOffsetData, replyTypeOffsetHole, replyTypeOffsetData, replyTypeOffsetHole},
			[][2]uint64{{64 * k, 192 * k}, {320 * k, 704 * k}}},
		{"data then hole", 32 * k, 128 * k,
			[]uint16{replyTypeOffsetData, replyTypeOffsetHole}, [][2]uint64{{64 * k, 96 * k}}},
		{"all hole", 512 * k, 256 * k, []uint16{replyTypeOffsetHole}, [][2]uint64{{512 * k, 256 * k}}},
		{"short read of a hole, sent as data", 128 * k, 4096, []uint16{replyTypeOffsetData}, nil},
	} {
		res := c.readChunks(0, tc.off, tc.length)
		require.Nil(t, res.err, tc.name)
		require.Equal(t, content[tc.off:tc.off+uint64(tc.length)], res.data, tc.name)
		if holes {
			require.Equal(t, tc.types, res.types, tc.name)
			require.Equal(t, tc.holes, res.holes, tc.name)
		}
		if tc.holes != nil && holes {
			require.Less(t, res.wire, int(tc.length)/2, "%s: holes are not sent as zeroes", tc.name)
		}
	}
}

func TestStructuredReadFailsPartWay(t *testing.T) {
	ts := startServer(t, serverConfig{size: 1 << 20})
	c := dial(t, ts)
	c.connectStructured()
	// The file shrinks under the export: reads past its new end fail.
	const cut = 512<<10 + 1000
	require.NoError(t, os.Truncate(ts.file, cut))
	res := c.readChunks(0, 256<<10, 768<<10)
	require.Equal(t, []uint16{replyTypeOffsetData, replyTypeErrorOffset}, res.types)
	require.NotNil(t, res.err)
	require.Equal(t, uint32(errIO), res.err.errno)
	require.Equal(t, uint64(cut), res.err.offset)
	require.Equal(t, "read: the file ends before the export does (did it shrink?)", res.err.msg)
	require.Equal(t, pattern(0, cut)[256<<10:], res.data[:cut-256<<10], "the data before the error")
	ts.waitLog(": read of 786432 bytes at 262144 failed: EOF")

	// Failures are logged at most once a second; the next line counts
	// the failures that were not. (The second is made to last, here, as
	// long as the test needs.)
	ts.srv.failures.mu.Lock()
	ts.srv.failures.next = time.Now().Add(time.Hour)
	ts.srv.failures.mu.Unlock()
	res = c.readChunks(0, 768<<10, 4096)
	require.Equal(t, []uint16{replyTypeErrorOffset}, res.types, "an error at the first byte")
	require.NotNil(t, res.err)
	require.Equal(t, uint64(768<<10), res.err.offset)
	ts.srv.failures.mu.Lock()
	require.Equal(t, 1, ts.srv.failures.held, "a second failure within the second is not logged")
	ts.srv.failures.next = time.Time{} // now the second is over
	ts.srv.failures.mu.Unlock()
	res = c.readChunks(0, 900<<10, 4096)
	require.NotNil(t, res.err)
	ts.waitLog(": read of 4096 bytes at 921600 failed: EOF (and 1 more failed since the last such line)")

	// The connection goes on.
	res = c.readChunks(0, 0, 4096)
	require.Nil(t, res.err)
	require.Equal(t, pattern(0, 4096), res.data)

	// The failures held back are logged when the second is over (the
	// timer is made to fire now)...
	hold := func(n int) {
		ts.srv.failures.mu.Lock()
		ts.srv.failures.next = time.Now().Add(time.Hour)
		ts.srv.failures.mu.Unlock()
		for range n {
			require.NotNil(t, c.readChunks(0, 900<<10, 4096).err)
		}
	}
	hold(1)
	ts.srv.failures.mu.Lock()
	ts.srv.failures.timer.Reset(0)
	ts.srv.failures.mu.Unlock()
	ts.waitLog("nbd: 1 more requests failed since the last such line")
	// ... or at Shutdown, once every connection is done.
	hold(2)
	found, _ := ts.findLog("nbd: 2 more requests failed")
	require.False(t, found)
	require.NoError(t, ts.srv.Shutdown(context.Background()))
	found, _ = ts.findLog("nbd: 2 more requests failed since the last such line")
	require.True(t, found, "Shutdown logs the failures held back")
}

// TestStructuredReadFailsPastAShrunkEndInAHole checks a file that shrinks
// to an end inside a hole: a structured read that runs from the hole past
// the new end sends the hole up to the end and fails there, as a simple
// read of the same range fails, and block status does not report the
// bytes past the end as a hole that reads as zeroes.
func TestStructuredReadFailsPastAShrunkEndInAHole(t *testing.T) {
	ts := startServer(t, serverConfig{size: sparseSize})
	content, holes := makeSparse(t, ts.file)
	c := dial(t, ts)
	c.connectStructured()
	const k = 1 << 10
	const cut = 512 * k // in the trailing hole, which starts at 320 KiB
	require.NoError(t, os.Truncate(ts.file, cut))

	res := c.readChunks(0, 256*k, 512*k)
	require.NotNil(t, res.err, "a read past the end of the file fails")
	require.Equal(t, uint32(errIO), res.err.errno)
	require.Equal(t, uint64(cut), res.err.offset)
	require.Equal(t, content[256*k:cut], res.data[:cut-256*k], "what comes before the end")
	if holes {
		require.Equal(t, []uint16{replyTypeOffsetData, replyTypeOffsetHole, replyTypeErrorOffset}, res.types)
		require.Equal(t, [][2]uint64{{320 * k, cut - 320*k}}, res.holes)
	}

	_, exts, cerr := c.blockStatus(0, 320*k, 384*k)
	require.Nil(t, cerr)
	if holes {
		require.Equal(t, extent{cut - 320*k, stateHole | stateZero}, exts[0], "the hole ends at the end of the file")
	}
	var zero uint32
	for _, e := range exts {
		if e.flags&stateZero != 0 {
			zero += e.length
		}
	}
	require.LessOrEqual(t, zero, uint32(cut-320*k), "nothing past the end of the file reads as zeroes")
	for i := 1; i < len(exts); i++ {
		require.NotEqual(t, exts[i-1].flags, exts[i].flags, "adjacent descriptors alike: %v", exts)
	}

	res = c.readChunks(0, 0, 4096) // the connection goes on
	require.Nil(t, res.err)
	require.Equal(t, content[:4096], res.data)
}

func TestStructuredReadRefused(t *testing.T) {
	const size = 1 << 20
	ts := startServer(t, serverConfig{size: size})
	c := dial(t, ts)
	c.connectStructured()
	for _, tc := range []rangeCase{
		{"past the end", 0, size - 100, 4096},
		{"offset wraps", 0, ^uint64(0) - 10, 4096},
		{"don't-fragment flag not advertised", 1 << 2, 0, 4096},
		{"too large", 0, 0, MaxPayload + 1},
	} {
		res := c.readChunks(tc.flags, tc.off, tc.length)
		require.Equal(t, []uint16{replyTypeError}, res.types, tc.name)
		require.NotNil(t, res.err, tc.name)
		require.Equal(t, uint32(errInval), res.err.errno, tc.name)
		require.NotEmpty(t, res.err.msg, tc.name)
	}
	res := c.readChunks(0, size-4096, 4096)
	require.Nil(t, res.err)
	require.Equal(t, pattern(0, size)[size-4096:], res.data)
}

// TestStructuredReadsDoNotAllocate checks that structured replies keep
// the steady state free of allocations: a 4 KiB read is one data chunk.
func TestStructuredReadsDoNotAllocate(t *testing.T) {
	ts := startServer(t, serverConfig{size: 1 << 20})
	c := dial(t, ts)
	c.connectStructured()
	requireNoAllocsPerRead(t, c, chunkHeaderLen+8+4096, 16)
}

// TestStructuredReadsOneFlushPerBatch checks that structured replies keep
// the batching: one request to the executor per read, one flush per batch.
func TestStructuredReadsOneFlushPerBatch(t *testing.T) {
	ts := startServer(t, serverConfig{size: 1 << 20})
	c := dial(t, ts)
	c.connectStructured()
	requireOneFlushPerBatch(t, ts, c, func() {
		require.Equal(t, uint32(magicStructuredReply), c.u32())
		require.Equal(t, uint16(replyFlagDone), c.u16())
		require.Equal(t, uint16(replyTypeOffsetData), c.u16())
		c.u64() // cookie
		require.Equal(t, uint32(8+4096), c.u32())
		c.full(make([]byte, 8+4096))
	})
}
