package nbd

// Magic numbers, big-endian on the wire.
const (
	magicNBD         = 0x4e42444d41474943 // "NBDMAGIC"
	magicOption      = 0x49484156454f5054 // "IHAVEOPT"
	magicOptionReply = 0x0003e889045565a9
	magicRequest     = 0x25609513
	magicSimpleReply = 0x67446698
)

// Handshake flags sent by the server.
const (
	hsFlagFixedNewstyle = 1 << 0
	hsFlagNoZeroes      = 1 << 1
)

// Client flags sent in answer to the handshake flags.
const (
	clientFlagFixedNewstyle = 1 << 0
	clientFlagNoZeroes      = 1 << 1
	clientFlagsKnown        = clientFlagFixedNewstyle | clientFlagNoZeroes
)

// Options the client may send during negotiation.
const (
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
)

// Option reply types. Error replies have bit 31 set.
const (
	repAck          = 1
	repServer       = 2
	repInfo         = 3
	repErrUnsup     = 1<<31 + 1
	repErrPolicy    = 1<<31 + 2
	repErrInvalid   = 1<<31 + 3
	repErrTLSReqd   = 1<<31 + 5
	repErrUnknown   = 1<<31 + 6
	repErrShutdown  = 1<<31 + 7
	repErrTooBig    = 1<<31 + 9
	repErrorBitMask = 1 << 31
)

// Information types carried by NBD_REP_INFO.
const (
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3
)

// Transmission flags describing an export.
const (
	tfHasFlags        = 1 << 0
	tfReadOnly        = 1 << 1
	tfSendFlush       = 1 << 2
	tfSendFUA         = 1 << 3
	tfSendTrim        = 1 << 5
	tfSendWriteZeroes = 1 << 6
	tfCanMultiConn    = 1 << 8
)

// Request types.
const (
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdWriteZeroes = 6
)

// Command flags.
const (
	cmdFlagFUA    = 1 << 0
	cmdFlagNoHole = 1 << 1
)

// Error values carried by simple replies.
const (
	errPerm     = 1
	errIO       = 5
	errNoMem    = 12
	errInval    = 22
	errNoSpc    = 28
	errShutdown = 108
)

// Sizes of fixed parts of messages.
const (
	requestHeaderLen = 28
	replyHeaderLen   = 16
	optionHeaderLen  = 16
)

// MaxPayload is the largest read or write this server handles in one
// request (32 MiB), the size the protocol tells clients to stay within.
// It is also advertised as the maximum block size.
const MaxPayload = 32 << 20

// Block sizes advertised with NBD_INFO_BLOCK_SIZE.
const (
	minBlockSize       = 1
	preferredBlockSize = 4096
)

// maxOptionLen bounds the data of one negotiation option that the server
// reads and parses: room for the largest it can serve, a metadata context
// option with a 4096-byte export name and maxMetaQueries queries of 4096
// bytes each (NBD_OPT_GO, with a 4096-byte name and every one of 65535
// information requests, is a little shorter). The data of a longer option
// is read and dropped, and the option refused (see negotiation.skip).
const maxOptionLen = 4 + maxNameLen + 4 + maxMetaQueries*(4+maxNameLen)

// maxSkippedOption bounds the data of an option that is too long to serve
// but is still read and dropped, so that negotiation goes on: the protocol
// asks the server to refuse options, not to disconnect, unless the client's
// behaviour amounts to a denial of service, which an option longer than the
// largest payload of a write (MaxPayload) is taken to be.
const maxSkippedOption = MaxPayload

// maxNameLen is the protocol's limit on strings such as export names.
const maxNameLen = 4096
