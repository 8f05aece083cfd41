package nbd

import (
	"encoding/binary"
	"errors"
	"io"

	"golang.org/x/sys/unix"
)

// NBD_CMD_BLOCK_STATUS, and the sparse-aware reads of structured replies,
// both answered from the file's holes (SEEK_HOLE and SEEK_DATA).
const (
	cmdBlockStatus = 7
	cmdFlagReqOne  = 1 << 3

	// Flags of a base:allocation descriptor.
	stateHole = 1 << 0
	stateZero = 1 << 1

	// maxDescriptors bounds the descriptors of one block status reply;
	// a client asks again from where a shorter reply ends.
	maxDescriptors = 512
	// descriptorBufLen is the buffer a block status request takes from
	// the connection's budget: one buffer of the smallest class.
	descriptorBufLen = 8 * maxDescriptors

	// sparseReadMin is the shortest structured read in which holes are
	// looked for; a shorter read is sent as one data chunk, because the
	// lseek calls would cost more than the zeroes they save.
	sparseReadMin = 64 << 10
	// minHoleChunk is the shortest hole sent as NBD_REPLY_TYPE_OFFSET_HOLE
	// within a read; a shorter one is read and sent as data.
	minHoleChunk = 4096
	// maxReadSpans bounds the chunks of one read; the rest of a read
	// with more holes is sent as data.
	maxReadSpans = 64
)

// span is one run of a structured read: length bytes of data, read into
// the request's buffer, or of a hole, sent as a hole chunk.
type span struct {
	length uint32
	hole   bool
}

// checkBlockStatus returns the error for a block status request that must
// fail without I/O, or 0, and records the reason for the error chunk.
func (r *request) checkBlockStatus(e *Export) uint32 {
	switch {
	case !r.c.ext.structured:
		return errInval // an unknown command without structured replies
	case !r.c.ext.baseAlloc:
		r.msg = "NBD_CMD_BLOCK_STATUS without a metadata context selected"
	case r.flags&^(cmdFlagFUA|cmdFlagReqOne) != 0:
		r.msg = "unknown flag for NBD_CMD_BLOCK_STATUS"
	case r.length == 0:
		r.msg = "NBD_CMD_BLOCK_STATUS of length 0"
	case !r.inBounds(e.size):
		r.msg = "NBD_CMD_BLOCK_STATUS past the end of the export"
	default:
		return 0
	}
	return errInval
}

// blockStatus runs on an Executor goroutine: it writes the base:allocation
// descriptors of the request's range into its buffer, one per run of data
// or hole, at most maxDescriptors (one with NBD_CMD_FLAG_REQ_ONE).
func (r *request) blockStatus() {
	limit := maxDescriptors
	if r.flags&cmdFlagReqOne != 0 {
		limit = 1
	}
	b := (*r.buf)[:0]
	off := int64(r.offset)
	end := off + int64(r.length)
	for off < end && len(b) < 8*limit {
		n, hole := r.c.exp.nextExtent(off, end)
		var flags uint32
		if hole {
			flags = stateHole | stateZero
		}
		if k := len(b); k > 0 && binary.BigEndian.Uint32(b[k-4:]) == flags {
			// Like the one before (data up to a file's end and the
			// export past it): one descriptor for both.
			binary.BigEndian.PutUint32(b[k-8:], binary.BigEndian.Uint32(b[k-8:])+uint32(n))
		} else {
			b = binary.BigEndian.AppendUint32(b, uint32(n))
			b = binary.BigEndian.AppendUint32(b, flags)
		}
		off += n
	}
	r.n = uint32(len(b))
}

// readSpans runs on an Executor goroutine: the I/O of a structured read.
// It splits the range into data and hole spans and reads the data ones;
// when a read fails it records in r.n how many bytes from the start of the
// request were read, and returns the error.
func (r *request) readSpans() error {
	e := r.c.exp
	r.spans = e.planRead(r.spans[:0], int64(r.offset), r.length)
	buf := r.payload()
	var pos uint32
	for _, s := range r.spans {
		if !s.hole {
			n, err := e.file.ReadAt(buf[pos:pos+s.length], int64(r.offset)+int64(pos))
			if err != nil {
				r.n = pos + uint32(n)
				return err
			}
		}
		pos += s.length
	}
	return nil
}

// planRead appends to spans the data and hole runs of length bytes at off.
// Reads shorter than sparseReadMin, and files without hole support, make
// one data span; an empty read makes none.
func (e *Export) planRead(spans []span, off int64, length uint32) []span {
	if length == 0 {
		return spans
	}
	if length < sparseReadMin {
		return append(spans, span{length: length})
	}
	end := off + int64(length)
	for off < end {
		n, hole := end-off, false
		if len(spans) < maxReadSpans-1 {
			n, hole = e.nextExtent(off, end)
			hole = hole && n >= minHoleChunk
		}
		if k := len(spans) - 1; k >= 0 && spans[k].hole == hole {
			spans[k].length += uint32(n)
		} else {
			spans = append(spans, span{length: uint32(n), hole: hole})
		}
		off += n
	}
	return spans
}

// nextExtent returns the length of the run of data or hole that starts at
// off, cut at end (off < end), and whether it is a hole. Where the file
// system cannot tell (no SEEK_HOLE, or the file changed under the
// request), the rest of the range is reported as data, which is always
// correct: data is read from the file. A hole ends at the end of the file
// at the latest; past it (a file that shrank under the export) is data,
// whose read fails. It never returns a length of 0.
func (e *Export) nextExtent(off, end int64) (n int64, hole bool) {
	h, err := e.file.Seek(off, unix.SEEK_HOLE)
	if err != nil {
		return end - off, false
	}
	if h > off {
		return min(h, end) - off, false
	}
	// off is in a hole, which ends where data starts again.
	d, err := e.file.Seek(off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		// No data after off: the hole runs to the end of the file,
		// which may have shrunk under the export. What lies past the
		// end is not a hole but bytes that cannot be read: data, whose
		// read then fails there.
		d, err = e.file.Seek(0, io.SeekEnd)
		if err != nil || d <= off {
			return end - off, false
		}
	case err != nil || d <= off:
		return end - off, false
	}
	return min(d, end) - off, true
}
