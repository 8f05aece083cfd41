package nbd

import (
	"context"
	"math"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// failingListener fails its first Accept calls with err, as the kernel
// fails accept(2) when the process is out of file descriptors, then
// accepts as l does.
type failingListener struct {
	net.Listener
	err   syscall.Errno
	fails atomic.Int32 // Accept calls left to fail
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: os.NewSyscallError("accept4", l.err)}
	}
	return l.Listener.Accept()
}

// requireServedAfterAcceptErrors checks, for each errno, that a server
// whose listener fails two accepts with it serves the next client.
func requireServedAfterAcceptErrors(t *testing.T, errnos ...syscall.Errno) {
	for _, errno := range errnos {
		t.Run(errno.Error(), func(t *testing.T) {
			ts := startServer(t, serverConfig{listen: func(l net.Listener) net.Listener {
				fl := &failingListener{Listener: l, err: errno}
				fl.fails.Store(2)
				return fl
			}})
			c := dial(t, ts)
			c.connect("")
			errno, data := c.read(0, 4096)
			require.Zero(t, errno)
			require.Equal(t, pattern(0, 4096), data)
		})
	}
}

// TestServeRetriesWhenOutOfDescriptors checks that an accept that fails
// for want of file descriptors (or of kernel memory), as a burst of
// connections past the descriptor limit makes it, does not end Serve: it
// accepts again, and the next client is served.
func TestServeRetriesWhenOutOfDescriptors(t *testing.T) {
	requireServedAfterAcceptErrors(t, syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM)
}

// TestServeRetriesAfterANetworkError checks that an accept that fails with
// a network error of the connection it was taking (accept(2) on Linux
// reports those, to be retried like EAGAIN) does not end Serve either,
// while an error that says the listener itself is broken does.
func TestServeRetriesAfterANetworkError(t *testing.T) {
	requireServedAfterAcceptErrors(t, syscall.ENETDOWN, syscall.EPROTO, syscall.ENOPROTOOPT, syscall.EHOSTDOWN, syscall.EHOSTUNREACH, syscall.ENETUNREACH)
	for _, errno := range []syscall.Errno{syscall.EBADF, syscall.EINVAL, syscall.EOPNOTSUPP} {
		require.False(t, temporaryAccept(os.NewSyscallError("accept4", errno)), "%v", errno)
	}
}

// TestServeRetriesAfterAnAbortedConnection checks that an accept that fails
// because the connection it was taking was aborted or reset by its client
// before it was accepted (a listener other than the net package's, which
// retries those itself, passes them on) does not end Serve.
func TestServeRetriesAfterAnAbortedConnection(t *testing.T) {
	requireServedAfterAcceptErrors(t, syscall.ECONNABORTED, syscall.ECONNRESET)
}

// TestServeEndsOnADatagramListener checks that a listener whose socket
// cannot accept at all, a Unix datagram socket made into a listener, ends
// Serve with its error (EOPNOTSUPP, for ever on every accept) rather than
// making it wait and accept again for ever.
func TestServeEndsOnADatagramListener(t *testing.T) {
	defer func(lo, hi time.Duration) { acceptBackoffMin, acceptBackoffMax = lo, hi }(acceptBackoffMin, acceptBackoffMax)
	acceptBackoffMin, acceptBackoffMax = time.Hour, time.Hour
	uc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "s"), Net: "unixgram"})
	require.NoError(t, err)
	f, err := uc.File()
	require.NoError(t, err)
	require.NoError(t, uc.Close())
	l, err := net.FileListener(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	srv := &Server{}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case err := <-served:
		require.ErrorIs(t, err, syscall.EOPNOTSUPP)
	case <-time.After(30 * time.Second):
		require.NoError(t, srv.Shutdown(context.Background()))
		<-served
		t.Fatal("Serve waits to accept again on a listener that can never accept")
	}
}

// TestShutdownEndsServeBackingOff checks that Shutdown ends a Serve that
// waits to accept again after a temporary accept error at once, rather than
// when its wait is over: here an hour, where Serve would wait up to a
// second.
func TestShutdownEndsServeBackingOff(t *testing.T) {
	defer func(lo, hi time.Duration) { acceptBackoffMin, acceptBackoffMax = lo, hi }(acceptBackoffMin, acceptBackoffMax)
	acceptBackoffMin, acceptBackoffMax = time.Hour, time.Hour
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	require.NoError(t, err)
	fl := &failingListener{Listener: l, err: syscall.EMFILE}
	fl.fails.Store(math.MaxInt32)
	srv := &Server{}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(fl) }()
	waitStack(t, "nbd.(*Server).backoff")
	require.NoError(t, srv.Shutdown(context.Background()))
	select {
	case err := <-served:
		require.ErrorIs(t, err, ErrServerClosed)
	case <-time.After(30 * time.Second):
		t.Fatal("Serve still waits to accept again after Shutdown")
	}
}

// A server with MaxConns connections open closes the next one it accepts at
// once, before its greeting, and logs it; once one of them has gone, a new
// one is served.
func TestMaxConnsRefusesConnectionsBeyondIt(t *testing.T) {
	ts := startServer(t, serverConfig{tune: func(s *Server) { s.MaxConns = 2 }})
	first, second := dial(t, ts), dial(t, ts)
	first.connect("")
	second.connect("")
	dial(t, ts).expectEOF()
	ts.waitLog("refused: 2 connections open (MaxConns)")
	require.Equal(t, uint32(0), second.write(0, []byte("still served"), 0))

	first.request(cmdDisc, 0, 0, 0, nil)
	first.expectEOF()
	// The server lets go of the first connection once its goroutines have
	// finished: until then a new one is refused, at once.
	for {
		c := dial(t, ts)
		if _, err := c.br.Peek(1); err == nil {
			c.connect("")
			errno, data := c.read(0, 12)
			require.Equal(t, uint32(0), errno)
			require.Equal(t, "still served", string(data))
			return
		}
	}
}

// Without MaxConns, connections are not counted against any bound.
func TestNoMaxConnsServesEveryConnection(t *testing.T) {
	ts := startServer(t, serverConfig{})
	for range 8 {
		dial(t, ts).connect("")
	}
	found, _ := ts.findLog("MaxConns")
	require.False(t, found)
}
