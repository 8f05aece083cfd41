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

// maxOptionLen bounds the data of one negotiation option. The largest
// option this server understands (NBD_OPT_GO with a 4096-byte name and a
// few information requests) is far smaller.
const maxOptionLen = 16 << 10

// maxNameLen is the protocol's limit on strings such as export names.
const maxNameLen = 4096
