package nbd

import (
	"bufio"
	"encoding/binary"
	"io"
)

// negotiation is the state of one connection's handshake, used by its
// serve goroutine only.
type negotiation struct {
	c        *conn
	bw       *bufio.Writer
	fixed    bool // the client speaks fixed newstyle
	noZeroes bool // omit the 124 zero bytes after NBD_OPT_EXPORT_NAME
	tlsOn    bool // NBD_OPT_STARTTLS succeeded; see startTLS
	scratch  []byte
}

// negotiate runs the fixed-newstyle handshake. It reports true when the
// client chose the export and the transmission phase begins, false when
// the connection must close.
func (c *conn) negotiate() bool {
	n := &negotiation{c: c, bw: bufio.NewWriterSize(c.nc, 4096)}
	var b [18]byte
	binary.BigEndian.PutUint64(b[0:], magicNBD)
	binary.BigEndian.PutUint64(b[8:], magicOption)
	binary.BigEndian.PutUint16(b[16:], hsFlagFixedNewstyle|hsFlagNoZeroes)
	if _, err := n.bw.Write(b[:]); err != nil || n.bw.Flush() != nil {
		return false
	}
	if _, err := io.ReadFull(c.br, b[:4]); err != nil {
		return false
	}
	flags := binary.BigEndian.Uint32(b[:4])
	if flags&^clientFlagsKnown != 0 {
		c.srv.logf("nbd: %s: unknown client flags %#x", c.nc.RemoteAddr(), flags)
		return false
	}
	n.fixed = flags&clientFlagFixedNewstyle != 0
	n.noZeroes = flags&clientFlagNoZeroes != 0
	for {
		done, ok := n.option()
		if err := n.bw.Flush(); err != nil {
			c.sendFailed = true
			return false
		}
		if !ok {
			return false
		}
		if done {
			return true
		}
	}
}

// option reads and answers one option. done means the transmission phase
// begins; !ok means the connection must close.
//
// Data longer than maxOptionLen, more than any option the server serves
// can carry, is read and dropped, and the option refused as any other one
// it cannot serve (see refuseTooLong), so the client can go on
// negotiating; NBD_OPT_EXPORT_NAME, which has no error reply (its name
// would be over the protocol's 4096 bytes anyway), an option from a client
// without fixed newstyle, which cannot be refused either, and data over
// maxSkippedOption close the connection.
func (n *negotiation) option() (done, ok bool) {
	br := n.c.br
	var h [optionHeaderLen]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return false, false
	}
	if binary.BigEndian.Uint64(h[0:]) != magicOption {
		n.c.srv.logf("nbd: %s: bad option magic", n.c.nc.RemoteAddr())
		return false, false
	}
	opt := binary.BigEndian.Uint32(h[8:])
	length := binary.BigEndian.Uint32(h[12:])
	tooLong := length > maxOptionLen
	var data []byte
	if tooLong {
		if !n.fixed || opt == optExportName || length > maxSkippedOption {
			n.c.srv.logf("nbd: %s: option %d with %d bytes of data", n.c.nc.RemoteAddr(), opt, length)
			return false, false
		}
		if _, err := io.CopyN(io.Discard, br, int64(length)); err != nil {
			return false, false
		}
	} else {
		data = make([]byte, length)
		if _, err := io.ReadFull(br, data); err != nil {
			return false, false
		}
	}
	if !n.fixed && opt != optExportName {
		// Without fixed newstyle there is no way to refuse an option.
		return false, false
	}
	if n.c.stopping.Load() && opt != optAbort {
		// Shutdown has begun (see conn.stop). NBD_OPT_EXPORT_NAME has
		// no error reply: its connection just closes.
		if opt != optExportName {
			n.refuse(opt, repErrShutdown, "server shutting down")
		}
		return false, false
	}
	if n.c.srv.TLS == TLSRequire && !n.tlsOn && opt != optStartTLS && opt != optAbort {
		return n.tlsRequired(opt)
	}
	if tooLong && opt != optAbort {
		return false, n.refuseTooLong(opt)
	}
	switch opt {
	case optExportName:
		return n.exportName(data)
	case optAbort:
		n.reply(opt, repAck, nil)
		return false, false
	case optList:
		return false, n.list(data)
	case optInfo, optGo:
		return n.infoOrGo(opt, data)
	case optStructuredReply:
		return false, n.structuredReply(data)
	case optListMetaContext, optSetMetaContext:
		return false, n.metaContext(opt, data)
	case optStartTLS:
		return false, n.startTLS(data)
	default:
		return false, n.refuse(opt, repErrUnsup, "unknown option")
	}
}

// refuseTooLong refuses an option whose data was too long to serve: with
// NBD_REP_ERR_TOO_BIG if the server knows it, NBD_REP_ERR_UNSUP if not or
// if SimpleRepliesOnly turns it off. A refused SET_META_CONTEXT still
// clears the selection, as any SET does.
func (n *negotiation) refuseTooLong(opt uint32) bool {
	if opt == optSetMetaContext {
		n.c.ext.baseAlloc = false
	}
	switch opt {
	case optStructuredReply, optListMetaContext, optSetMetaContext:
		if n.c.srv.SimpleRepliesOnly {
			return n.refuse(opt, repErrUnsup, "structured replies are turned off")
		}
	case optList, optStartTLS, optInfo, optGo:
	default:
		return n.refuse(opt, repErrUnsup, "unknown option")
	}
	return n.refuse(opt, repErrTooBig, "option data too long")
}

// exportName answers NBD_OPT_EXPORT_NAME, which has no error reply: an
// unknown name closes the connection.
func (n *negotiation) exportName(name []byte) (done, ok bool) {
	e := n.c.exp
	if !e.matches(name) {
		n.c.srv.logf("nbd: %s: unknown export %q", n.c.nc.RemoteAddr(), name)
		return false, false
	}
	var b [10 + 124]byte
	binary.BigEndian.PutUint64(b[0:], uint64(e.size))
	binary.BigEndian.PutUint16(b[8:], e.flags())
	out := b[:]
	if n.noZeroes {
		out = b[:10]
	}
	_, err := n.bw.Write(out)
	return err == nil, err == nil
}

// list answers NBD_OPT_LIST with the one export.
func (n *negotiation) list(data []byte) bool {
	if len(data) != 0 {
		return n.refuse(optList, repErrInvalid, "NBD_OPT_LIST takes no data")
	}
	name := n.c.exp.Name
	b := binary.BigEndian.AppendUint32(n.scratch[:0], uint32(len(name)))
	b = append(b, name...)
	n.scratch = b
	return n.reply(optList, repServer, b) && n.reply(optList, repAck, nil)
}

// infoOrGo answers NBD_OPT_INFO and NBD_OPT_GO. Their data is the export
// name (32-bit length first) and a 16-bit count of 16-bit information
// requests.
func (n *negotiation) infoOrGo(opt uint32, data []byte) (done, ok bool) {
	if len(data) < 6 {
		return false, n.refuse(opt, repErrInvalid, "option data too short")
	}
	nameLen := uint64(binary.BigEndian.Uint32(data))
	if nameLen > uint64(len(data)-6) {
		return false, n.refuse(opt, repErrInvalid, "export name overruns the option")
	}
	name := data[4 : 4+nameLen]
	rest := data[4+nameLen:]
	count := int(binary.BigEndian.Uint16(rest))
	if len(rest) != 2+2*count {
		return false, n.refuse(opt, repErrInvalid, "information request count does not match the option length")
	}
	e := n.c.exp
	if !e.matches(name) {
		return false, n.refuse(opt, repErrUnknown, "no such export")
	}
	var wantName, wantDesc bool
	for i := range count {
		switch binary.BigEndian.Uint16(rest[2+2*i:]) {
		case infoName:
			wantName = true
		case infoDescription:
			wantDesc = true
		}
	}
	b := n.scratch[:0]
	b = binary.BigEndian.AppendUint16(b, infoExport)
	b = binary.BigEndian.AppendUint64(b, uint64(e.size))
	b = binary.BigEndian.AppendUint16(b, e.flags())
	ok = n.reply(opt, repInfo, b)
	// The block sizes are sent unasked: the maximum is below the
	// protocol's default of "unlimited".
	b = binary.BigEndian.AppendUint16(b[:0], infoBlockSize)
	b = binary.BigEndian.AppendUint32(b, minBlockSize)
	b = binary.BigEndian.AppendUint32(b, preferredBlockSize)
	b = binary.BigEndian.AppendUint32(b, MaxPayload)
	ok = ok && n.reply(opt, repInfo, b)
	if wantName {
		b = binary.BigEndian.AppendUint16(b[:0], infoName)
		b = append(b, e.Name...)
		ok = ok && n.reply(opt, repInfo, b)
	}
	if wantDesc && e.Description != "" {
		b = binary.BigEndian.AppendUint16(b[:0], infoDescription)
		b = append(b, e.Description...)
		ok = ok && n.reply(opt, repInfo, b)
	}
	n.scratch = b
	ok = ok && n.reply(opt, repAck, nil)
	return ok && opt == optGo, ok
}

// refuse sends an error reply with a message.
func (n *negotiation) refuse(opt, typ uint32, msg string) bool {
	return n.reply(opt, typ, []byte(msg))
}

// reply sends one option reply.
func (n *negotiation) reply(opt, typ uint32, data []byte) bool {
	var h [20]byte
	binary.BigEndian.PutUint64(h[0:], magicOptionReply)
	binary.BigEndian.PutUint32(h[8:], opt)
	binary.BigEndian.PutUint32(h[12:], typ)
	binary.BigEndian.PutUint32(h[16:], uint32(len(data)))
	if _, err := n.bw.Write(h[:]); err != nil {
		return false
	}
	_, err := n.bw.Write(data)
	return err == nil
}

// matches reports whether name selects the export: its own name or the
// empty default name.
func (e *Export) matches(name []byte) bool {
	return len(name) == 0 || string(name) == e.Name
}
