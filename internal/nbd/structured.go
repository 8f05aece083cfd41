package nbd

import "encoding/binary"

// Structured replies: negotiated with NBD_OPT_STRUCTURED_REPLY, they let a
// read reply in several chunks (data, holes, errors part-way) and carry
// the replies of NBD_CMD_BLOCK_STATUS.
const (
	magicStructuredReply = 0x668e33ef
	chunkHeaderLen       = 20

	replyFlagDone = 1 << 0 // the last chunk of a reply

	replyTypeNone        = 0
	replyTypeOffsetData  = 1
	replyTypeOffsetHole  = 2
	replyTypeBlockStatus = 5
	replyTypeError       = 1<<15 + 1
	replyTypeErrorOffset = 1<<15 + 2
)

// extensions is what a connection negotiated beyond simple replies. The
// serve goroutine sets it while negotiating; from the transmission phase
// on it is read-only (the reader goroutine, the work functions and the
// completion goroutine read it after Submit, which orders them after the
// negotiation).
type extensions struct {
	structured bool // NBD_OPT_STRUCTURED_REPLY was acknowledged
	baseAlloc  bool // NBD_OPT_SET_META_CONTEXT selected base:allocation
}

// structuredReply answers NBD_OPT_STRUCTURED_REPLY.
func (n *negotiation) structuredReply(data []byte) bool {
	switch {
	case n.c.srv.SimpleRepliesOnly:
		return n.refuse(optStructuredReply, repErrUnsup, "structured replies are turned off")
	case len(data) != 0:
		return n.refuse(optStructuredReply, repErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data")
	case n.c.ext.structured:
		return n.refuse(optStructuredReply, repErrInvalid, "structured replies are already negotiated")
	}
	n.c.ext.structured = true
	return n.reply(optStructuredReply, repAck, nil)
}

// usesChunks reports whether r is answered with structured reply chunks:
// reads and block status once structured replies are negotiated. Other
// commands keep simple replies, which the protocol allows for replies
// without a payload.
func (r *request) usesChunks() bool {
	return r.c.ext.structured && (r.typ == cmdRead || r.typ == cmdBlockStatus)
}

// appendChunks appends r's structured reply.
func (rb *replyBuf) appendChunks(r *request) {
	rb.held.add(grant{reqs: 1, bytes: r.grant})
	switch {
	case r.errno != 0 && len(r.spans) == 0:
		// Refused before any I/O, or the Executor failed it.
		rb.appendErrorChunk(r, replyTypeError, 0)
	case r.typ == cmdBlockStatus:
		rb.appendChunkHeader(replyFlagDone, replyTypeBlockStatus, r.cookie, 4+r.n)
		rb.b = binary.BigEndian.AppendUint32(rb.b, baseAllocationID)
		rb.b = append(rb.b, (*r.buf)[:r.n]...)
	default:
		rb.appendReadChunks(r)
	}
}

// appendReadChunks appends a structured read reply: one data or hole chunk
// per span up to where the read failed, if it did, then an error chunk
// with that offset. The last chunk carries the DONE flag.
func (rb *replyBuf) appendReadChunks(r *request) {
	failed := r.errno != 0
	covered := r.length
	if failed {
		covered = r.n
	}
	data := r.payload()
	var pos uint32
	for _, s := range r.spans {
		if pos >= covered {
			break
		}
		n := min(s.length, covered-pos)
		var flags uint16
		if !failed && pos+n == r.length {
			flags = replyFlagDone
		}
		off := r.offset + uint64(pos)
		if s.hole {
			rb.appendChunkHeader(flags, replyTypeOffsetHole, r.cookie, 12)
			rb.b = binary.BigEndian.AppendUint64(rb.b, off)
			rb.b = binary.BigEndian.AppendUint32(rb.b, n)
		} else {
			rb.appendChunkHeader(flags, replyTypeOffsetData, r.cookie, 8+n)
			rb.b = binary.BigEndian.AppendUint64(rb.b, off)
			rb.b = append(rb.b, data[pos:pos+n]...)
		}
		pos += n
	}
	switch {
	case failed:
		rb.appendErrorChunk(r, replyTypeErrorOffset, r.offset+uint64(covered))
	case r.length == 0:
		// No content chunk may be empty.
		rb.appendChunkHeader(replyFlagDone, replyTypeNone, r.cookie, 0)
	}
}

// appendErrorChunk appends the final error chunk of r's reply; offset is
// used by NBD_REPLY_TYPE_ERROR_OFFSET only.
func (rb *replyBuf) appendErrorChunk(r *request, typ uint16, offset uint64) {
	msg := r.errorMessage()
	length := 6 + uint32(len(msg))
	if typ == replyTypeErrorOffset {
		length += 8
	}
	rb.appendChunkHeader(replyFlagDone, typ, r.cookie, length)
	rb.b = binary.BigEndian.AppendUint32(rb.b, r.errno)
	rb.b = binary.BigEndian.AppendUint16(rb.b, uint16(len(msg)))
	rb.b = append(rb.b, msg...)
	if typ == replyTypeErrorOffset {
		rb.b = binary.BigEndian.AppendUint64(rb.b, offset)
	}
}

// appendChunkHeader appends the header of one structured reply chunk
// whose payload is length bytes.
func (rb *replyBuf) appendChunkHeader(flags, typ uint16, cookie uint64, length uint32) {
	b := binary.BigEndian.AppendUint32(rb.b, magicStructuredReply)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, cookie)
	rb.b = binary.BigEndian.AppendUint32(b, length)
}

// errorMessage returns the text sent with r's error chunk: the reason
// recorded when the request was refused, or one for its error value.
func (r *request) errorMessage() string {
	if r.msg != "" {
		return r.msg
	}
	switch r.errno {
	case errPerm:
		return "operation not permitted"
	case errNoMem:
		return "out of memory"
	case errInval:
		return "invalid request"
	case errNoSpc:
		return "no space left"
	case errShutdown:
		return "server shutting down"
	default:
		return "input/output error"
	}
}
