package nbd

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestWaitReadable checks waitReadable on a TCP socket: false once its time
// is up with nothing to read, true with data to read, whether the data was
// there before the wait or came while it waited.
func TestWaitReadable(t *testing.T) {
	a, b := tcpPair(t)
	fd := socketFd(t, a)
	require.False(t, waitReadable(fd, time.Millisecond))

	_, err := b.Write([]byte{1})
	require.NoError(t, err)
	require.True(t, waitReadable(fd, time.Minute))
	var one [1]byte
	_, err = a.Read(one[:])
	require.NoError(t, err)

	done := make(chan bool)
	go func() { done <- waitReadable(fd, time.Minute) }()
	_, err = b.Write([]byte{2})
	require.NoError(t, err)
	require.True(t, <-done)
}
