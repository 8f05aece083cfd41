package nbd

import (
	"syscall"
	"testing"
)

// TestServeRetriesAfterENONET checks that an accept that fails with
// ENONET, which accept(2) on Linux names among the network errors of the
// connection being accepted, to be retried like EAGAIN, does not end Serve.
func TestServeRetriesAfterENONET(t *testing.T) {
	requireServedAfterAcceptErrors(t, syscall.ENONET)
}
