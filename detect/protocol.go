package detect

import "time"

// Protocol is what a connection's first bytes were found to be.
type Protocol uint8

// The protocols detection can tell apart. Opaque is the zero value because it
// is the safe default: an opaque connection is proxied byte for byte.
const (
	// Opaque is anything that is not HTTP/1.x or HTTP/2, including TLS.
	Opaque Protocol = iota
	// HTTP1 is an HTTP/1.0 or HTTP/1.1 request line.
	HTTP1
	// HTTP2 is the HTTP/2 client connection preface (prior knowledge, h2c);
	// gRPC arrives this way.
	HTTP2
)

// String returns the protocol's name as used in labels and logs.
func (p Protocol) String() string {
	switch p {
	case Opaque:
		return "opaque"
	case HTTP1:
		return "http1"
	case HTTP2:
		return "http2"
	}
	return "unknown"
}

// Outcome says how detection ended. It is the result label of the
// protocol_detect_total metric; it is a string so that later kinds of outcome
// can be added without renumbering anything.
type Outcome string

// The outcomes of Detect.
const (
	// OutcomeHTTP1 means a complete HTTP/1.x request line arrived.
	OutcomeHTTP1 Outcome = "http1"
	// OutcomeHTTP2 means the complete HTTP/2 preface arrived.
	OutcomeHTTP2 Outcome = "http2"
	// OutcomeOpaque means the bytes ruled HTTP out, the buffer filled up
	// without a complete request line, or the client closed after sending
	// an undecided prefix.
	OutcomeOpaque Outcome = "opaque"
	// OutcomeTimeout means the timeout passed before the bytes settled the
	// question; the client may have sent nothing (a server-first protocol)
	// or an incomplete prefix.
	OutcomeTimeout Outcome = "timeout"
	// OutcomeEmpty means the client closed its side, or the connection
	// failed, before sending a single byte.
	OutcomeEmpty Outcome = "empty"
	// OutcomeServerFirst means the client stayed silent and the server
	// spoke first on a connection opened speculatively. The outbound proxy
	// decides it, not Detect.
	OutcomeServerFirst Outcome = "server_first"
	// OutcomeLearned means the destination was already known to speak
	// first, so detection was skipped. The outbound proxy decides it.
	OutcomeLearned Outcome = "learned"
)

// Result describes one detection.
type Result struct {
	// Protocol is the detected protocol; anything but HTTP1 and HTTP2 is
	// Opaque.
	Protocol Protocol
	// Outcome says how detection ended (why the protocol is what it is).
	Outcome Outcome
	// TLS reports that the first bytes were a complete, well-formed TLS
	// ClientHello. Protocol is Opaque then.
	TLS bool
	// SNI is the ClientHello's server name, lower-cased and without a
	// trailing dot; empty when there was none or it was not a valid DNS
	// name.
	SNI string
	// ALPN lists the protocols the ClientHello offered, in order; only the
	// first 16 are kept, as they are meant for labels. The slice may be
	// shared with other Results of the same Detector: read it, do not
	// modify it.
	ALPN []string
	// Peeked is how many bytes were read while detecting; the returned
	// connection replays them.
	Peeked int
	// Elapsed is how long detection took.
	Elapsed time.Duration
}

// outcomeOf maps a decided protocol to its outcome.
func outcomeOf(p Protocol) Outcome {
	switch p {
	case HTTP1:
		return OutcomeHTTP1
	case HTTP2:
		return OutcomeHTTP2
	}
	return OutcomeOpaque
}
