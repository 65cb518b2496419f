package detect

// http2Preface is the HTTP/2 client connection preface (RFC 9113, 3.4). Its
// first line has the shape of a request line with method PRI and version
// HTTP/2.0, which HTTP/1 parsing alone would reject as opaque.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Classify decides what protocol a connection whose first bytes are b speaks.
// done is false when b is a prefix that could still become more than one
// thing, so more bytes are needed; then p is Opaque. A decision is final: if
// Classify decides on b, it decides the same for every extension of b.
//
// The rules, strictest that real clients allow:
//
//   - HTTP2: b starts with the 24-byte HTTP/2 client preface.
//   - HTTP1: b starts with a request line (RFC 9112, 3): a method, SP, a
//     request target, SP, "HTTP/1.0" or "HTTP/1.1", CRLF. The method may be
//     any token of RFC 9110 tchars, case-sensitively; real methods are
//     upper case, but the grammar allows any token and extension methods
//     exist, so a lower-case method is still HTTP. The target is one or more
//     bytes that are neither SP nor control characters, which covers the
//     origin, absolute, authority (CONNECT) and asterisk (OPTIONS *) forms.
//     A bare LF ending is not accepted.
//   - Opaque: everything else, decided at the first byte that cannot belong
//     to either of the above, so a client speaking something else never
//     waits.
//
// Classify does not allocate.
func Classify(b []byte) (p Protocol, done bool) {
	var s scanner
	return s.scan(b)
}

// scanner classifies a growing buffer incrementally: each call to scan looks
// only at the bytes it has not seen before, so a client sending one byte at a
// time costs linear, not quadratic, work.
type scanner struct {
	pos   int     // next byte of the buffer to examine
	mark  int     // where the current part of the request line starts
	phase h1Phase // where in the request line pos is
}

// h1Phase is the part of an HTTP/1 request line being scanned.
type h1Phase uint8

const (
	phaseMethod h1Phase = iota
	phaseTarget
	phaseVersion
	phaseMatched // a complete request line
	phaseFailed  // not a request line
)

// httpVersionPrefix is the part of the HTTP-version common to 1.0 and 1.1.
const httpVersionPrefix = "HTTP/1."

// scan classifies b, which must extend the buffer given to earlier calls.
func (s *scanner) scan(b []byte) (Protocol, bool) {
	switch n := min(len(b), len(http2Preface)); {
	case string(b[:n]) != http2Preface[:n]:
		// Not HTTP/2: fall through to HTTP/1.
	case n == len(http2Preface):
		return HTTP2, true
	default:
		// A proper prefix of the preface: could still be HTTP/2.
		return Opaque, false
	}
	s.scanRequestLine(b)
	switch s.phase {
	case phaseMatched:
		return HTTP1, true
	case phaseFailed:
		return Opaque, true
	}
	return Opaque, false
}

// scanRequestLine advances the HTTP/1 request-line state machine over the
// bytes of b not yet seen.
func (s *scanner) scanRequestLine(b []byte) {
	for ; s.pos < len(b) && s.phase < phaseMatched; s.pos++ {
		c := b[s.pos]
		switch s.phase {
		case phaseMethod:
			switch {
			case c == ' ' && s.pos > s.mark:
				s.phase, s.mark = phaseTarget, s.pos+1
			case !isTchar(c):
				s.phase = phaseFailed
			}
		case phaseTarget:
			switch {
			case c == ' ' && s.pos > s.mark:
				s.phase, s.mark = phaseVersion, s.pos+1
			case c == ' ' || isCTL(c):
				s.phase = phaseFailed
			}
		case phaseVersion:
			var ok bool
			switch i := s.pos - s.mark; {
			case i < len(httpVersionPrefix):
				ok = c == httpVersionPrefix[i]
			case i == len(httpVersionPrefix):
				ok = c == '0' || c == '1'
			case i == len(httpVersionPrefix)+1:
				ok = c == '\r'
			default:
				ok = c == '\n'
				if ok {
					s.phase = phaseMatched
				}
			}
			if !ok {
				s.phase = phaseFailed
			}
		}
	}
}

// isTchar reports whether c may appear in an HTTP token (RFC 9110, 5.6.2).
func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// isCTL reports whether c is an ASCII control character.
func isCTL(c byte) bool { return c < 0x20 || c == 0x7f }
