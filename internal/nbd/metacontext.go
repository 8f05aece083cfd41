package nbd

import (
	"bytes"
	"encoding/binary"
)

// Metadata contexts: NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT
// select what NBD_CMD_BLOCK_STATUS reports. The server knows one context,
// base:allocation.
const (
	optListMetaContext = 9
	optSetMetaContext  = 10
	repMetaContext     = 4

	baseAllocation = "base:allocation"
	// baseAllocationID is the context ID given to base:allocation by
	// NBD_OPT_SET_META_CONTEXT and sent with its block status chunks.
	baseAllocationID = 1
	// maxMetaQueries bounds the queries of one option; more get
	// NBD_REP_ERR_TOO_BIG.
	maxMetaQueries = 32
)

// metaContext answers NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT.
// Their data is the export name and a list of queries, each with a 32-bit
// length first. A SET replaces the selection even when it fails.
func (n *negotiation) metaContext(opt uint32, data []byte) bool {
	set := opt == optSetMetaContext
	if set {
		n.c.ext.baseAlloc = false
	}
	if n.c.srv.SimpleRepliesOnly {
		return n.refuse(opt, repErrUnsup, "metadata contexts need structured replies, which are turned off")
	}
	if set && !n.c.ext.structured {
		return n.refuse(opt, repErrInvalid, "NBD_OPT_SET_META_CONTEXT before NBD_OPT_STRUCTURED_REPLY")
	}
	name, queries, ok := splitMetaRequest(data)
	if !ok {
		return n.refuse(opt, repErrInvalid, "malformed metadata context request")
	}
	count := binary.BigEndian.Uint32(queries)
	queries = queries[4:]
	if uint64(count) > uint64(len(queries)/4) {
		return n.refuse(opt, repErrInvalid, "query count overruns the option")
	}
	if count > maxMetaQueries {
		return n.refuse(opt, repErrTooBig, "too many queries")
	}
	found := !set && count == 0 // LIST without queries lists everything
	for range count {
		q, rest, ok := splitString(queries)
		if !ok {
			return n.refuse(opt, repErrInvalid, "query overruns the option")
		}
		queries = rest
		if len(q) > maxNameLen || bytes.IndexByte(q, ':') < 1 {
			return n.refuse(opt, repErrInvalid, "a query must be a namespace, a colon and a leaf name, at most 4096 bytes")
		}
		// Unknown namespaces and leaf names are ignored, as the
		// protocol requires; "base:" is a wildcard for LIST only.
		if string(q) == baseAllocation || (!set && string(q) == "base:") {
			found = true
		}
	}
	if len(queries) != 0 {
		return n.refuse(opt, repErrInvalid, "bytes after the last query")
	}
	if !n.c.exp.matches(name) {
		return n.refuse(opt, repErrUnknown, "no such export")
	}
	ok = true
	if found {
		// LIST's context IDs are reserved and sent as zero.
		var id uint32
		if set {
			id = baseAllocationID
		}
		b := binary.BigEndian.AppendUint32(n.scratch[:0], id)
		b = append(b, baseAllocation...)
		n.scratch = b
		ok = n.reply(opt, repMetaContext, b)
	}
	if set {
		n.c.ext.baseAlloc = found
	}
	return ok && n.reply(opt, repAck, nil)
}

// splitMetaRequest splits a metadata context option into the export name
// and the rest, which starts with the 32-bit query count.
func splitMetaRequest(data []byte) (name, rest []byte, ok bool) {
	name, rest, ok = splitString(data)
	return name, rest, ok && len(rest) >= 4
}

// splitString splits a string with a 32-bit length first off b.
func splitString(b []byte) (s, rest []byte, ok bool) {
	if len(b) < 4 {
		return nil, nil, false
	}
	n := uint64(binary.BigEndian.Uint32(b))
	if n > uint64(len(b)-4) {
		return nil, nil, false
	}
	return b[4 : 4+n], b[4+n:], true
}
