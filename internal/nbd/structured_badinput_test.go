package nbd

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMalformedMetaContext(t *testing.T) {
	ts := startServer(t, serverConfig{name: "disk"})
	c := dial(t, ts)
	c.greet(clientFlagFixedNewstyle)
	c.structuredReply()
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	tooMany := make([]string, maxMetaQueries+1)
	for i := range tooMany {
		tooMany[i] = baseAllocation
	}
	for _, tc := range []struct {
		name string
		data []byte
		want uint32
	}{
		{"no data", nil, repErrInvalid},
		{"name length cut short", []byte{0, 0, 0}, repErrInvalid},
		{"no query count", u32(0), repErrInvalid},
		{"name overruns", append(u32(9), "disk\x00\x00\x00\x00"...), repErrInvalid},
		{"huge name length", append(u32(0xffffffff), 0, 0, 0, 0), repErrInvalid},
		{"count overruns", metaData("disk", baseAllocation)[:8+4+4+len(baseAllocation)-1], repErrInvalid},
		{"two queries announced, one sent", append(append(u32(0), u32(2)...), metaData("", baseAllocation)[8:]...), repErrInvalid},
		{"huge count", append(u32(0), u32(0xffffffff)...), repErrInvalid},
		{"query overruns", append(append(u32(0), u32(1)...), append(u32(100), "base:allocation"...)...), repErrInvalid},
		{"trailing bytes", append(metaData("disk", baseAllocation), 0), repErrInvalid},
		{"query without a namespace", metaData("disk", "allocation"), repErrInvalid},
		{"empty namespace", metaData("disk", ":allocation"), repErrInvalid},
		{"query over 4096 bytes", metaData("disk", "x-a:"+strings.Repeat("a", maxNameLen)), repErrInvalid},
		{"too many queries", metaData("disk", tooMany...), repErrTooBig},
		{"unknown export", metaData("other", baseAllocation), repErrUnknown},
	} {
		for _, opt := range []uint32{optListMetaContext, optSetMetaContext} {
			c.option(opt, tc.data)
			ctxs, typ := c.metaReplies(opt)
			require.Equal(t, tc.want, typ, "%s (option %d)", tc.name, opt)
			require.Empty(t, ctxs, tc.name)
		}
	}
	// A failed SET_META_CONTEXT leaves no context selected, even after a
	// good one.
	c.option(optSetMetaContext, metaData("disk", baseAllocation))
	ctxs, typ := c.metaReplies(optSetMetaContext)
	require.Equal(t, uint32(repAck), typ)
	require.Len(t, ctxs, 1)
	c.option(optSetMetaContext, metaData("other", baseAllocation))
	_, typ = c.metaReplies(optSetMetaContext)
	require.Equal(t, uint32(repErrUnknown), typ)
	c.connect2()
	_, _, cerr := c.blockStatus(0, 0, 4096)
	require.NotNil(t, cerr)
	require.Equal(t, uint32(errInval), cerr.errno)
	require.Contains(t, cerr.msg, "metadata context")
}

func TestBlockStatusBadInput(t *testing.T) {
	const size = 1 << 20
	ts := startServer(t, serverConfig{size: size})
	t.Run("without structured replies", func(t *testing.T) {
		c := dial(t, ts)
		c.connect("")
		errno, _ := c.do(cmdBlockStatus, 0, 0, 4096, nil)
		require.Equal(t, uint32(errInval), errno)
		errno, _ = c.read(0, 4096)
		require.Zero(t, errno)
	})
	t.Run("without a context", func(t *testing.T) {
		c := dial(t, ts)
		c.greet(clientFlagFixedNewstyle)
		c.structuredReply()
		c.connect2()
		_, _, cerr := c.blockStatus(0, 0, 4096)
		require.NotNil(t, cerr)
		require.Equal(t, uint32(errInval), cerr.errno)
	})
	t.Run("bad ranges and flags", func(t *testing.T) {
		c := dial(t, ts)
		c.connectStructured()
		for _, tc := range []rangeCase{
			{"length 0", 0, 0, 0},
			{"past the end", 0, size - 4096, 8192},
			{"at the end", 0, size, 1},
			{"offset wraps", 0, ^uint64(0) - 10, 4096},
			{"read's don't-fragment flag", 1 << 2, 0, 4096},
			{"no-hole flag", cmdFlagNoHole, 0, 4096},
			{"unknown flag", 1 << 15, 0, 4096},
		} {
			_, _, cerr := c.blockStatus(tc.flags, tc.off, tc.length)
			require.NotNil(t, cerr, tc.name)
			require.Equal(t, uint32(errInval), cerr.errno, tc.name)
			require.NotEmpty(t, cerr.msg, tc.name)
		}
		// Still in step.
		_, exts, cerr := c.blockStatus(0, size-4096, 4096)
		require.Nil(t, cerr)
		require.Equal(t, uint32(4096), exts[0].length)
	})
}
