package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const writableFlags = tfHasFlags | tfSendFlush | tfSendFUA | tfCanMultiConn | tfSendTrim | tfSendWriteZeroes

func TestGoDefaultExport(t *testing.T) {
	ts := startServer(t, serverConfig{size: 1 << 20, name: "disk"})
	c := dial(t, ts)
	info := c.connect("")
	require.Equal(t, uint64(1<<20), info.size)
	require.Equal(t, uint16(writableFlags), info.flags)
	require.True(t, info.sawBlockSize)
	require.Equal(t, uint32(1), info.minBS)
	require.Equal(t, uint32(4096), info.prefBS)
	require.Equal(t, uint32(MaxPayload), info.maxBS)
	errno, data := c.read(0, 512)
	require.Zero(t, errno)
	require.Equal(t, pattern(0, 512), data)
}

func TestGoNamedExportWithInfos(t *testing.T) {
	ts := startServer(t, serverConfig{name: "disk"})
	ts.srv.Export.Description = "test disk"
	c := dial(t, ts)
	c.greet(clientFlagFixedNewstyle)
	c.option(optGo, goData("disk", infoName, infoDescription, infoBlockSize))
	info, typ, _ := c.infoReplies(optGo)
	require.Equal(t, uint32(repAck), typ)
	require.Equal(t, "disk", info.name)
	require.Equal(t, "test disk", info.description)
	errno, _ := c.read(0, 1)
	require.Zero(t, errno)
}

func TestInfoThenGo(t *testing.T) {
	ts := startServer(t, serverConfig{size: 8192, readOnly: true})
	c := dial(t, ts)
	c.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	c.option(optInfo, goData(""))
	info, typ, _ := c.infoReplies(optInfo)
	require.Equal(t, uint32(repAck), typ)
	require.Equal(t, uint64(8192), info.size)
	require.Equal(t, uint16(tfHasFlags|tfReadOnly|tfSendFlush|tfSendFUA|tfCanMultiConn), info.flags)
	c.option(optGo, goData(""))
	_, typ, _ = c.infoReplies(optGo)
	require.Equal(t, uint32(repAck), typ)
	errno, _ := c.read(4096, 4096)
	require.Zero(t, errno)
}

func TestGoUnknownExportThenRetry(t *testing.T) {
	ts := startServer(t, serverConfig{name: "disk"})
	c := dial(t, ts)
	c.greet(clientFlagFixedNewstyle)
	c.option(optGo, goData("other"))
	typ, msg := c.optReply(optGo)
	require.Equal(t, uint32(repErrUnknown), typ)
	require.NotEmpty(t, msg)
	c.option(optGo, goData("disk"))
	_, typ, _ = c.infoReplies(optGo)
	require.Equal(t, uint32(repAck), typ)
}

func TestExportName(t *testing.T) {
	for _, noZeroes := range []bool{false, true} {
		ts := startServer(t, serverConfig{size: 4096, name: "disk"})
		c := dial(t, ts)
		flags := uint32(clientFlagFixedNewstyle)
		if noZeroes {
			flags |= clientFlagNoZeroes
		}
		c.greet(flags)
		c.option(optExportName, []byte("disk"))
		require.Equal(t, uint64(4096), c.u64())
		require.Equal(t, uint16(writableFlags), c.u16())
		if !noZeroes {
			zeroes := make([]byte, 124)
			c.full(zeroes)
			require.Equal(t, make([]byte, 124), zeroes)
		}
		errno, data := c.read(0, 16)
		require.Zero(t, errno)
		require.Equal(t, pattern(0, 16), data)
	}
}

func TestExportNameUnknownCloses(t *testing.T) {
	ts := startServer(t, serverConfig{name: "disk"})
	c := dial(t, ts)
	c.greet(clientFlagFixedNewstyle)
	c.option(optExportName, []byte("nope"))
	c.expectEOF()
}

func TestOldNewstyleClient(t *testing.T) {
	ts := startServer(t, serverConfig{})
	c := dial(t, ts)
	c.greet(0)
	c.option(optExportName, nil)
	require.Equal(t, uint64(1<<20), c.u64())

	c = dial(t, ts)
	c.greet(0)
	c.option(optList, nil) // cannot be refused without fixed newstyle
	c.expectEOF()
}

func TestList(t *testing.T) {
	ts := startServer(t, serverConfig{name: "disk"})
	c := dial(t, ts)
	c.greet(clientFlagFixedNewstyle)
	c.option(optList, nil)
	typ, data := c.optReply(optList)
	require.Equal(t, uint32(repServer), typ)
	require.Equal(t, append(binary.BigEndian.AppendUint32(nil, 4), "disk"...), data)
	typ, data = c.optReply(optList)
	require.Equal(t, uint32(repAck), typ)
	require.Empty(t, data)

	c.option(optList, []byte{1})
	typ, _ = c.optReply(optList)
	require.Equal(t, uint32(repErrInvalid), typ)
	c.option(optAbort, nil)
	typ, _ = c.optReply(optAbort)
	require.Equal(t, uint32(repAck), typ)
	c.expectEOF()
}

func TestRefusedOptions(t *testing.T) {
	ts := startServer(t, serverConfig{})
	c := dial(t, ts)
	c.greet(clientFlagFixedNewstyle)
	// STARTTLS (off by default) gets NBD_REP_ERR_POLICY: see the TLS tests.
	for _, opt := range []uint32{4, 11, 12, 999} {
		c.option(opt, []byte("some data"))
		typ, _ := c.optReply(opt)
		require.Equal(t, uint32(repErrUnsup), typ, "option %d", opt)
	}
	// Still negotiating: a client falls back to simple replies and goes on.
	info := c.connect2()
	require.Equal(t, uint64(1<<20), info.size)
}

// connect2 finishes a negotiation already greeted.
func (c *client) connect2() exportInfo {
	c.t.Helper()
	c.option(optGo, goData(""))
	info, typ, _ := c.infoReplies(optGo)
	require.Equal(c.t, uint32(repAck), typ)
	return info
}

func TestMalformedGo(t *testing.T) {
	ts := startServer(t, serverConfig{})
	c := dial(t, ts)
	c.greet(clientFlagFixedNewstyle)
	bad := [][]byte{
		nil,
		{0, 0, 0},
		{0, 0, 0, 9, 'a', 0, 0},              // name overruns
		append(goData(""), 0),                // trailing byte
		goData("")[:5],                       // count cut short
		{0, 0, 0, 0, 0, 2, 0, infoName},      // two infos announced, one sent
		{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, // huge name length
	}
	for _, data := range bad {
		c.option(optGo, data)
		typ, _ := c.optReply(optGo)
		require.Equal(t, uint32(repErrInvalid), typ, "data %x", data)
	}
	c.connect2()
}

func TestHandshakeProtocolViolationsClose(t *testing.T) {
	ts := startServer(t, serverConfig{})
	t.Run("unknown client flags", func(t *testing.T) {
		c := dial(t, ts)
		c.greet(clientFlagFixedNewstyle | 1<<7)
		c.expectEOF()
	})
	t.Run("bad option magic", func(t *testing.T) {
		c := dial(t, ts)
		c.greet(clientFlagFixedNewstyle)
		c.send(make([]byte, optionHeaderLen))
		c.expectEOF()
	})
	t.Run("huge option", func(t *testing.T) {
		c := dial(t, ts)
		c.greet(clientFlagFixedNewstyle)
		b := binary.BigEndian.AppendUint64(nil, magicOption)
		b = binary.BigEndian.AppendUint32(b, optGo)
		b = binary.BigEndian.AppendUint32(b, 1<<30)
		c.send(b)
		c.expectEOF()
	})
	t.Run("client hangs up mid-option", func(t *testing.T) {
		c := dial(t, ts)
		c.greet(clientFlagFixedNewstyle)
		b := binary.BigEndian.AppendUint64(nil, magicOption)
		c.send(b[:5])
		require.NoError(t, c.nc.Close())
	})
}

// An option longer than the server reads is refused, its data skipped, and
// negotiation goes on; one within the protocol's limits (here a metadata
// context option with queries of up to 4096 bytes) is served, however
// long.
func TestLongOptions(t *testing.T) {
	ts := startServer(t, serverConfig{name: "disk"})
	c := dial(t, ts)
	c.greet(clientFlagFixedNewstyle)
	c.structuredReply()
	queries := []string{baseAllocation}
	for i := range 8 {
		queries = append(queries, fmt.Sprintf("x-long%d:%s", i, strings.Repeat("a", maxNameLen-8)))
	}
	data := metaData("disk", queries...)
	require.Greater(t, len(data), 32<<10)
	c.option(optSetMetaContext, data)
	ctxs, typ := c.metaReplies(optSetMetaContext)
	require.Equal(t, uint32(repAck), typ)
	require.Equal(t, map[string]uint32{baseAllocation: baseAllocationID}, ctxs)

	for _, tc := range []struct {
		opt    uint32
		length int
		want   uint32
	}{
		{999, 64 << 10, repErrUnsup},
		{optInfo, maxOptionLen + 1, repErrTooBig},
		{optList, 1 << 20, repErrTooBig},
	} {
		c.option(tc.opt, make([]byte, tc.length))
		typ, _ := c.optReply(tc.opt)
		require.Equal(t, tc.want, typ, "option %d with %d bytes", tc.opt, tc.length)
	}
	c.connect2()
	id, exts, cerr := c.blockStatus(0, 0, 4096)
	require.Nil(t, cerr)
	require.Equal(t, uint32(baseAllocationID), id)
	require.NotEmpty(t, exts)
}

// TestHandshakeTimeout checks that a client which says nothing is closed
// once the negotiation's time limit has passed. The limit starts as the
// server begins to serve the connection and bounds the greeting's write
// too: on a loaded machine the server may reach that write only after the
// limit, and then closes without a greeting. Either way the client reads
// at most the greeting, then EOF.
func TestHandshakeTimeout(t *testing.T) {
	ts := startServer(t, serverConfig{tune: func(s *Server) { s.HandshakeTimeout = 50 * time.Millisecond }})
	c := dial(t, ts)
	got, err := io.ReadAll(c.br) // say nothing
	if err != nil {
		require.True(t, isReset(err), "want EOF, got %v", err)
	}
	if len(got) > 0 {
		require.Len(t, got, 18, "the greeting, whole")
		require.Equal(t, "NBDMAGIC", string(got[:8]))
	}
}

// Over TCP, the replies to options pipelined before NBD_OPT_ABORT, and its
// own, reach a client that keeps sending after it: a connection closed in
// negotiation discards the client's input before it closes too, rather
// than close with it unread, which would reset the connection and drop the
// replies still queued (here more than the client's 4 KiB window).
func TestAbortRepliesSurviveUnreadInput(t *testing.T) {
	name := strings.Repeat("x", 4000)
	ts := startServer(t, serverConfig{size: 1 << 20, tcp: true, name: name})
	c := dialSmallWindow(t, ts)
	c.greet(clientFlagFixedNewstyle)
	const lists = 16 // 64 KiB of replies
	var b []byte
	opt := func(o uint32) {
		b = binary.BigEndian.AppendUint64(b, magicOption)
		b = binary.BigEndian.AppendUint32(b, o)
		b = binary.BigEndian.AppendUint32(b, 0)
	}
	for range lists {
		opt(optList)
	}
	opt(optAbort)
	// More than the server reads at once: some is unread whenever it closes.
	b = append(b, make([]byte, 1<<20)...)
	wrote := make(chan error, 1)
	go func() {
		_, err := c.nc.Write(b)
		wrote <- errors.Join(err, c.nc.(*net.TCPConn).CloseWrite())
	}()
	require.NoError(t, <-wrote)
	waitForgotten(t, ts) // the server has closed; the client has read nothing yet
	expectListsThenAbort(t, c, lists, name)
	c.expectEOF()
}

// expectListsThenAbort reads the replies to lists NBD_OPT_LIST options, on a
// server whose one export is named name, and then the acknowledgement of an
// NBD_OPT_ABORT.
func expectListsThenAbort(t *testing.T, c *client, lists int, name string) {
	t.Helper()
	for i := range lists {
		typ, data := c.optReply(optList)
		require.Equal(t, uint32(repServer), typ, "LIST reply %d", i)
		require.Len(t, data, 4+len(name))
		typ, _ = c.optReply(optList)
		require.Equal(t, uint32(repAck), typ, "LIST reply %d", i)
	}
	typ, _ := c.optReply(optAbort)
	require.Equal(t, uint32(repAck), typ)
}

// TestShutdownRefusesNextOption checks that a client still negotiating when
// Shutdown begins gets NBD_REP_ERR_SHUTDOWN for the option it sends next,
// as the protocol asks of a server that is shutting down, rather than
// having its connection closed under it; then the connection closes, and
// Shutdown returns.
func TestShutdownRefusesNextOption(t *testing.T) {
	defer func(d time.Duration) { shutdownOptionWait = d }(shutdownOptionWait)
	shutdownOptionWait = time.Hour // the client's next option comes, however slow the machine
	ts := startServer(t, serverConfig{tune: func(s *Server) { s.HandshakeTimeout = time.Hour }})
	c := dialListed(t, ts)

	shut := make(chan error, 1)
	go func() { shut <- ts.srv.Shutdown(context.Background()) }()
	waitClosing(t, ts)
	c.option(optGo, goData(""))
	typ, msg := c.optReply(optGo)
	require.Equal(t, uint32(repErrShutdown), typ, "%s", msg)
	c.expectEOF()
	require.NoError(t, <-shut)
}

// floodOptions sends NBD_OPT_LIST options on w, reading none of the
// replies, until a write fails; the channel is closed then.
func floodOptions(w io.Writer) <-chan struct{} {
	opt := binary.BigEndian.AppendUint64(nil, magicOption)
	opt = binary.BigEndian.AppendUint32(opt, optList)
	opt = binary.BigEndian.AppendUint32(opt, 0)
	flood := bytes.Repeat(opt, 4096)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for {
			if _, err := w.Write(flood); err != nil {
				return
			}
		}
	}()
	return sent
}

// TestShutdownBoundsNegotiatingClientThatDoesNotRead checks that a client
// still negotiating when Shutdown begins, whose server is waiting for it to
// read the replies to options it sent, is closed within Shutdown's wait for
// its option, as one that sends no option is, rather than kept for the rest
// of the negotiation's time limit.
func TestShutdownBoundsNegotiatingClientThatDoesNotRead(t *testing.T) {
	defer func(d time.Duration) { shutdownOptionWait = d }(shutdownOptionWait)
	shutdownOptionWait = 10 * time.Millisecond
	ts := startServer(t, serverConfig{tune: func(s *Server) { s.HandshakeTimeout = time.Hour }})
	c := dial(t, ts)
	c.greet(clientFlagFixedNewstyle)
	// The client sends options and reads none of the replies, until the
	// server's write of them waits for room in the socket.
	sent := floodOptions(c.nc)
	waitStack(t, "nbd.(*conn).negotiate", "internal/poll.(*FD).Write", "runtime_pollWait")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, ts.srv.Shutdown(ctx))
	c.nc.Close()
	<-sent
}
