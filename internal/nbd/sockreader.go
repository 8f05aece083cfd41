package nbd

import (
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// sockReader is what a connection's buffered reader reads from: the
// protocol's connection (c.rw) while negotiating, over TLS and on Unix
// sockets, and, during transmission on a plain TCP socket, the socket
// itself, read with rawRead through its syscall.RawConn (see useRaw). The
// raw path waits for data through the runtime's poller as net.Conn does,
// deadlines included. Serve goroutine only.
type sockReader struct {
	c   *conn                 // the ordinary path reads c.rw
	raw syscall.RawConn       // the raw path, once useRaw found one
	fn  func(fd uintptr) bool // r.read bound once, so reads do not allocate
	b   []byte                // what read fills
	n   int                   // how much read put in b
	err error                 // read's error
}

// useRaw switches r to raw reads of nc, a TCP socket that carries the
// protocol itself (no TLS). With the replies' writes and the inline reads
// from the page cache already raw (see rawio_linux.go), a lone request then
// makes no system call that the scheduler is told about, which took a
// fifth off the server CPU time per request over TCP loopback. Unix sockets
// keep net.Conn's reads: there raw reads made lone requests slower (see
// cmd/tpnbd/README.md).
func (r *sockReader) useRaw(nc *net.TCPConn) {
	rc, err := nc.SyscallConn()
	if err != nil {
		return
	}
	r.raw, r.fn = rc, r.read
}

// Read reads what the socket has, waiting for at least one byte; it
// returns io.EOF once the client has closed its end.
func (r *sockReader) Read(p []byte) (int, error) {
	if r.raw == nil {
		return r.c.rw.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	r.b, r.n, r.err = p, 0, nil
	err := r.raw.Read(r.fn)
	n := r.n
	if err == nil {
		err = r.err
	}
	r.b, r.err = nil, nil
	if n == 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

// read is the body of Read, called with the socket's descriptor held. It
// returns false to wait until the socket is readable.
func (r *sockReader) read(fd uintptr) bool {
	for {
		n, err := rawRead(int(fd), r.b)
		switch err {
		case nil:
			r.n = n
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			r.err = os.NewSyscallError("read", err)
			return true
		}
	}
}
