// Package header encodes and decodes the transport header: the small message
// an outbound proxy sends first inside the mTLS stream to a peer's inbound
// proxy (port 4143) to say which local port the connection is for.
//
// The header is only sent when the TLS handshake negotiated the ALPN protocol
// ID [ALPN]. On the wire it is the ASCII [Preface], a 4-byte big-endian body
// length, and a protobuf-encoded body (the schema is in header.proto next to
// this file; docs/transport-header.md describes the format byte by byte). The
// application's bytes follow immediately, so [Read] consumes exactly the
// header and nothing after it.
//
// The body is encoded and decoded by hand with protowire rather than with
// generated code: the message is tiny, and a hand-written decoder lets the
// size cap and every validity check sit in one place that is easy to fuzz.
package header

// ALPN is the TLS ALPN protocol ID under which the outbound and inbound
// proxies agree to exchange a transport header. An inbound proxy that did not
// negotiate it must not try to read a header.
const ALPN = "transport.meshproxy.io/v1"

// Preface is the fixed ASCII string every header starts with. It lets the
// reader reject a stream that is not a transport header after a few bytes,
// before trusting the length that follows.
const Preface = ALPN + "\r\n\r\n"

// MaxBodyLen is the largest body length Read accepts. A valid body of this
// version is at most a few hundred bytes (see MaxNameLen); the rest is room for
// fields added by later versions. A larger length is refused with ErrTooLong
// before anything is allocated for it.
const MaxBodyLen = 1024

// MaxNameLen is the longest Name, in bytes, that is encoded or accepted. It is
// the longest DNS name (253) with a little room, and keeps a header in one
// small TLS record.
const MaxNameLen = 255

// prefixLen is the length of the fixed part before the body: the preface and
// the 4-byte length.
const prefixLen = len(Preface) + 4

// SessionProtocol says what the connection carries after the header when the
// client proxy already knows it, so the inbound proxy can skip detection. The
// zero value, None, means unknown: the inbound treats the stream as opaque or
// detects it itself.
type SessionProtocol uint8

// The session protocols. They correspond to the Http1 and Http2 members of
// the SessionProtocol oneof in header.proto; None is the oneof left unset.
const (
	None SessionProtocol = iota
	HTTP1
	HTTP2
)

// String returns "none", "http1" or "http2", for logs.
func (p SessionProtocol) String() string {
	switch p {
	case None:
		return "none"
	case HTTP1:
		return "http1"
	case HTTP2:
		return "http2"
	default:
		return "invalid"
	}
}

// Header is a decoded transport header.
type Header struct {
	// Port is the port on the inbound proxy's host (its own pod) that the
	// client meant to reach. The inbound proxy connects to 127.0.0.1:Port,
	// never to an address a peer names. It must be in 1..65535.
	Port uint16
	// Name optionally names the logical destination the client dialed (such
	// as a service's DNS name). It is informational: it is never dialed or
	// resolved by the inbound proxy. When set it must be valid UTF-8 of at
	// most MaxNameLen bytes; empty means absent.
	Name string
	// SessionProtocol is the protocol the client proxy already knows the
	// stream carries, or None.
	SessionProtocol SessionProtocol
}
