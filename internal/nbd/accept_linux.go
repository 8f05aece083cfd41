package nbd

import "syscall"

// osTemporaryAcceptErrnos are the errors of accept(2) this system adds to
// temporaryAcceptErrnos: on Linux, ENONET, one of the network errors of the
// connection being accepted that accept(2) passes on (the other systems
// have no such errno).
var osTemporaryAcceptErrnos = []syscall.Errno{syscall.ENONET}
