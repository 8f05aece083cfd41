// Package nbd implements the server side of the Network Block Device
// protocol: the fixed-newstyle handshake and the transmission phase with
// simple or structured replies, for one file exported under one name.
// Structured reads send holes as hole chunks and can fail part-way with an
// error chunk; NBD_CMD_BLOCK_STATUS reports the file's data and holes in
// the base:allocation metadata context.
//
// The package leaves blocking file I/O to an [Executor]: each request read
// from a connection is handed to it as a work function (the pread, pwrite
// or fdatasync) and a completion callback. The one exception is
// [Server.Inline]: a connection with nothing in the Executor answers a
// read shorter than 64 KiB whose data is all in the page cache (which does
// not wait; Linux only) and a write without FUA (a buffered write)
// itself, and such a write may still wait while the kernel throttles a
// writer of too many dirty pages. The Executor runs the callbacks on one
// goroutine, in batches; a callback appends its reply to the connection's
// output buffer and asks the Executor to call the connection's [Flusher]
// once when the batch ends, so one batch costs one send per connection
// however many replies it holds.
//
// Sends from the completion goroutine never block: a flush first tries one
// non-blocking write, and whatever the socket does not take is handed to a
// per-connection writer goroutine, which writes it with a deadline.
//
// A connection upgraded to TLS with NBD_OPT_STARTTLS (see [TLSMode]) keeps
// that batching, but the completion goroutine does not encrypt: each flush
// hands its batch to the writer goroutine, which encrypts it and sends all
// its TLS records in one write.
package nbd
