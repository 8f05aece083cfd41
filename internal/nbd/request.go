package nbd

import (
	"encoding/binary"
	"sync"
)

// request is one transmission request from read to reply. The connection's
// reader goroutine fills it and submits it; the work function then runs on
// an Executor goroutine, and the completion on the Executor's completion
// goroutine, which appends the reply and recycles the request. Each of
// those owns it in turn, so it needs no lock.
type request struct {
	c      *conn
	typ    uint16
	flags  uint16
	cookie uint64
	offset uint64
	length uint32
	errno  uint32  // nonzero: reply with this error without doing any I/O
	msg    string  // why the request was refused, for an error chunk; may be empty
	buf    *[]byte // payload buffer from getBuf, or nil
	grant  int64   // payload bytes taken from the connection's budget
	spans  []span  // a structured read's data and hole runs (see readSpans)
	n      uint32  // bytes a structured read read before failing, or of block status descriptors

	workFn func() error    // r.work, bound once so Submit does not allocate
	doneFn func(err error) // r.done, bound once
}

// requestPool recycles requests with their bound method values.
var requestPool sync.Pool

func init() { requestPool.New = newRequest }

func newRequest() any {
	r := new(request)
	r.workFn = r.work
	r.doneFn = r.done
	return r
}

func getRequest(c *conn) *request {
	r := requestPool.Get().(*request)
	r.c = c
	return r
}

// recycle returns the request and its buffer to their pools.
func (r *request) recycle() {
	if r.buf != nil {
		putBuf(r.buf)
		r.buf = nil
	}
	r.c = nil
	r.errno = 0
	r.msg = ""
	r.grant = 0
	r.spans = r.spans[:0]
	r.n = 0
	requestPool.Put(r)
}

// decodeHeader fills r from a request header; it reports false if the
// magic is wrong.
func (r *request) decodeHeader(h *[requestHeaderLen]byte) bool {
	if binary.BigEndian.Uint32(h[0:]) != magicRequest {
		return false
	}
	r.flags = binary.BigEndian.Uint16(h[4:])
	r.typ = binary.BigEndian.Uint16(h[6:])
	r.cookie = binary.BigEndian.Uint64(h[8:])
	r.offset = binary.BigEndian.Uint64(h[16:])
	r.length = binary.BigEndian.Uint32(h[24:])
	return true
}

// payload returns the request's data buffer, sized to its length.
func (r *request) payload() []byte {
	if r.buf == nil {
		return nil
	}
	return (*r.buf)[:r.length]
}

// inBounds reports whether the request's range lies within the export.
func (r *request) inBounds(size int64) bool {
	end := r.offset + uint64(r.length)
	return end >= r.offset && end <= uint64(size)
}

// allowedFlags returns the command flags valid for the request's type.
// FUA is accepted on every command, as the protocol requires once
// NBD_FLAG_SEND_FUA is advertised.
func allowedFlags(typ uint16) uint16 {
	if typ == cmdWriteZeroes {
		return cmdFlagFUA | cmdFlagNoHole
	}
	return cmdFlagFUA
}

// check sets r.errno for a request that must fail without I/O: unknown
// type or flag, out of range, too large, or a write to a read-only export.
func (r *request) check(e *Export) {
	switch r.typ {
	case cmdRead, cmdWrite, cmdFlush, cmdTrim, cmdWriteZeroes:
	case cmdBlockStatus:
		r.errno = r.checkBlockStatus(e)
		return
	default:
		r.errno = errInval
		return
	}
	switch {
	case r.flags&^allowedFlags(r.typ) != 0:
		r.errno = errInval
	case r.typ != cmdRead && r.typ != cmdFlush && e.ReadOnly:
		r.errno = errPerm
	case (r.typ == cmdRead || r.typ == cmdWrite) && r.length > MaxPayload:
		r.errno = errInval
	case r.typ == cmdFlush:
		// Offset and length are unused; the protocol asks for zero but
		// existing clients are lenient and so is this server.
	case !r.inBounds(e.size) && (r.typ == cmdWrite || r.typ == cmdWriteZeroes):
		r.errno = errNoSpc
	case !r.inBounds(e.size):
		r.errno = errInval
	}
}

// work runs on an Executor goroutine: the request's blocking I/O.
func (r *request) work() error {
	if r.errno != 0 {
		return nil
	}
	e := r.c.exp
	var err error
	switch r.typ {
	case cmdRead:
		if r.c.ext.structured {
			err = r.readSpans()
		} else {
			err = e.readAt(r.payload(), int64(r.offset))
		}
	case cmdWrite:
		err = e.writeAt(r.payload(), int64(r.offset))
	case cmdFlush:
		err = e.Sync()
	case cmdTrim:
		err = e.trim(int64(r.offset), int64(r.length))
	case cmdWriteZeroes:
		err = e.zero(int64(r.offset), int64(r.length), r.flags&cmdFlagNoHole != 0)
	case cmdBlockStatus:
		r.blockStatus()
	}
	fuaSync := false
	if err == nil && r.flags&cmdFlagFUA != 0 && (r.typ == cmdWrite || r.typ == cmdTrim || r.typ == cmdWriteZeroes) {
		err, fuaSync = e.Sync(), true
	}
	if err != nil {
		what := commandName(r.typ)
		if fuaSync {
			what += "'s FUA sync"
		}
		r.fail(what, err)
	}
	return err
}

// done runs on the Executor's completion goroutine: it appends the reply to
// the connection's output and asks for a flush at the end of the batch.
func (r *request) done(err error) {
	c := r.c
	if err != nil && r.errno == 0 {
		// The Executor failed the request without running work.
		r.errno = errIO
	}
	c.out.pending.appendReply(r)
	r.recycle()
	c.exec.Defer(&c.out)
}
