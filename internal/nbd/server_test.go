package nbd

import (
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"

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

// TestServeRetriesWhenOutOfDescriptors checks that an accept that fails
// for want of file descriptors (or of kernel memory), as a burst of
// connections past the descriptor limit makes it, does not end Serve: it
// accepts again, and the next client is served.
func TestServeRetriesWhenOutOfDescriptors(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
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
