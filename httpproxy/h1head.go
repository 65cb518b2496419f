package httpproxy

import (
	"bufio"
	"io"
	"net/http"
)

// maxHeadBytes bounds a message head: the request or status line and the
// header fields. Envoy's default is 60 KiB; net/http's 1 MiB would let each
// client make the proxy hold a megabyte.
const maxHeadBytes = 64 << 10

// maxHeadFields bounds the field lines of a head (and of a trailer
// section), as Envoy's max_headers_count (100): more is refused with 431
// (502 from an upstream). With maxConnTokens it bounds the hop-by-hop check,
// which compares each field with each token Connection names, and the
// memory a connection's reused head can grow to.
const maxHeadFields = 100

// maxConnTokens bounds the tokens of the Connection fields of a head: more
// is refused with 400 (502 from an upstream). Real ones name a few fields.
const maxConnTokens = 16

// Capacities past which a connection's reused head lets its buffers go
// once a message is done (shrink): an idle keep-alive connection keeps
// little after one large head, a steady one of usual heads allocates
// nothing.
const (
	keepHeadBytes  = 8 << 10
	keepHeadFields = 32
	keepConnTokens = 8
)

// headError is a message head the relay will not forward, with the status
// a client gets for it.
type headError struct {
	status int
	msg    string
}

func (e *headError) Error() string { return e.msg }

func badHead(msg string) error { return &headError{http.StatusBadRequest, msg} }

var (
	errHeadTooLarge  = &headError{http.StatusRequestHeaderFieldsTooLarge, "message head too large"}
	errTooManyFields = &headError{http.StatusRequestHeaderFieldsTooLarge, "too many header fields"}
	errTooManyTokens = &headError{http.StatusBadRequest, "too many Connection tokens"}
)

// span is a piece of a head's raw bytes, [start, end).
type span struct{ start, end int }

func (s span) empty() bool { return s.end <= s.start }

// field is one header field line.
type field struct{ name, value span }

// h1Head is one HTTP/1 message head as received, and what the relay acts on,
// as offsets into raw. One per connection and direction is reused for every
// message, so parsing allocates nothing once raw and fields have grown.
type h1Head struct {
	raw    []byte
	fields []field

	method, target span // request line
	status         int  // status line
	reason         span
	minor          int // HTTP/1.minor

	contentLength int64 // -1 when the head has none
	chunked       bool
	// Connection tokens: close, keep-alive, upgrade, and the others, which
	// name hop-by-hop fields.
	connClose, connKeepAlive, connUpgrade bool
	connTokens                            []span

	host           span
	hosts          int  // Host fields
	uriHost, path  span // from the request target
	upgrade        span
	expectContinue bool
	teTrailers     bool
	grpcStatus     span
}

func (h *h1Head) bytes(s span) []byte { return h.raw[s.start:s.end] }

// read reads one head from br into h.raw, up to and including the empty
// line. It returns io.EOF if br ends before the head's first byte.
func (h *h1Head) read(br *bufio.Reader) error {
	h.raw = h.raw[:0]
	lineStart := 0
	for {
		part, err := br.ReadSlice('\n')
		if len(h.raw)+len(part) > maxHeadBytes {
			return errHeadTooLarge
		}
		h.raw = append(h.raw, part...)
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF && len(h.raw) > 0:
			return io.ErrUnexpectedEOF
		case err != nil:
			return err
		}
		line := h.raw[lineStart:]
		if lineStart > 0 && (len(line) == 1 || len(line) == 2 && line[0] == '\r') {
			return nil
		}
		lineStart = len(h.raw)
	}
}

// lines calls f with each line of raw but the last (empty) one, without
// its line ending.
func (h *h1Head) lines(f func(s span) error) error {
	start := 0
	for i, c := range h.raw {
		if c != '\n' {
			continue
		}
		end := i
		if end > start && h.raw[end-1] == '\r' {
			end--
		}
		if end == start && start > 0 {
			return nil // the empty line ending the head
		}
		if err := f(span{start, end}); err != nil {
			return err
		}
		start = i + 1
	}
	return nil
}

// shrink drops the buffers that one large head grew past what usual heads
// need; the next message allocates them again.
func (h *h1Head) shrink() {
	if cap(h.raw) > keepHeadBytes {
		h.raw = nil
	}
	if cap(h.fields) > keepHeadFields {
		h.fields = nil
	}
	if cap(h.connTokens) > keepConnTokens {
		h.connTokens = nil
	}
}

func (h *h1Head) reset() {
	raw, fields, tokens := h.raw, h.fields[:0], h.connTokens[:0]
	*h = h1Head{raw: raw, fields: fields, connTokens: tokens, contentLength: -1}
}

// parseRequest parses raw as a request head.
func (h *h1Head) parseRequest() error {
	h.reset()
	first := true
	err := h.lines(func(s span) error {
		if first {
			first = false
			return h.requestLine(s)
		}
		return h.field(s)
	})
	if err != nil {
		return err
	}
	if err := h.splitTarget(); err != nil {
		return err
	}
	return h.checkRequest()
}

// splitTarget finds the path and the authority, if any, of the request
// target (RFC 9112, 3.2): origin-form "/path?query", absolute-form
// "http://host/path", authority-form "host:port" of CONNECT, or "*".
func (h *h1Head) splitTarget() error {
	t := h.bytes(h.target)
	switch {
	case string(h.bytes(h.method)) == http.MethodConnect:
		if !validHost(t) {
			return badHead("invalid CONNECT target")
		}
		h.uriHost, h.path = h.target, h.target
	case t[0] == '/' || string(t) == "*":
		h.path = h.target
	case hasPrefixFold(t, "http://") || hasPrefixFold(t, "https://"):
		i := 7
		if t[4] != ':' {
			i = 8
		}
		j := i
		for j < len(t) && t[j] != '/' && t[j] != '?' {
			j++
		}
		if !validHost(t[i:j]) {
			return badHead("invalid request target")
		}
		h.uriHost = span{h.target.start + i, h.target.start + j}
		h.path = span{h.target.start + j, h.target.end}
	default:
		return badHead("invalid request target")
	}
	return nil
}

// authority is the request's authority: the target's if it has one (which
// RFC 9112, 3.2.2 makes win over Host), else Host.
func (h *h1Head) authority() []byte {
	if !h.uriHost.empty() {
		return h.bytes(h.uriHost)
	}
	return h.bytes(h.host)
}

// requestPath is the target to send upstream: origin-form, or what it is
// for CONNECT and "*". Empty or starting with '?', it lacks its "/".
func (h *h1Head) requestPath() []byte { return h.bytes(h.path) }

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && equalFold(b[:len(prefix)], prefix)
}

// parseResponse parses raw as a response head.
func (h *h1Head) parseResponse() error {
	h.reset()
	first := true
	err := h.lines(func(s span) error {
		if first {
			first = false
			return h.statusLine(s)
		}
		return h.field(s)
	})
	if err != nil {
		return err
	}
	switch {
	case h.chunked && h.contentLength >= 0:
		return badHead("both Content-Length and Transfer-Encoding")
	case h.chunked && h.minor == 0:
		// RFC 9112, 6.1: framing to be treated as faulty.
		return badHead("Transfer-Encoding in an HTTP/1.0 response")
	}
	return nil
}

// requestLine parses "method SP request-target SP HTTP-version".
func (h *h1Head) requestLine(s span) error {
	b := h.raw[:s.end]
	i := s.start
	for i < s.end && isTokenByte(b[i]) {
		i++
	}
	if i == s.start || i == s.end || b[i] != ' ' {
		return badHead("malformed request line")
	}
	h.method = span{s.start, i}
	i++
	t := i
	for i < s.end && b[i] > ' ' && b[i] != 0x7f {
		i++
	}
	if i == t || i == s.end || b[i] != ' ' {
		return badHead("malformed request line")
	}
	h.target = span{t, i}
	minor, ok := parseVersion(b[i+1 : s.end])
	if !ok {
		return &headError{http.StatusHTTPVersionNotSupported, "unsupported HTTP version"}
	}
	h.minor = minor
	return nil
}

// statusLine parses "HTTP-version SP 3DIGIT [SP reason]".
func (h *h1Head) statusLine(s span) error {
	b := h.raw[:s.end]
	if s.end-s.start < 12 || b[s.start+8] != ' ' {
		return badHead("malformed status line")
	}
	minor, ok := parseVersion(b[s.start : s.start+8])
	if !ok {
		return badHead("unsupported HTTP version")
	}
	h.minor = minor
	code := 0
	for _, c := range b[s.start+9 : s.start+12] {
		if c < '0' || c > '9' {
			return badHead("malformed status code")
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return badHead("malformed status code")
	}
	h.status = code
	r := s.start + 12
	if r < s.end {
		if b[r] != ' ' {
			return badHead("malformed status line")
		}
		r++
	}
	for _, c := range b[r:s.end] {
		if !isValueByte(c) {
			return badHead("malformed reason phrase")
		}
	}
	h.reason = span{r, s.end}
	return nil
}

func parseVersion(b []byte) (minor int, ok bool) {
	if len(b) != 8 || string(b[:7]) != "HTTP/1." || (b[7] != '0' && b[7] != '1') {
		return 0, false
	}
	return int(b[7] - '0'), true
}

// field parses one "name: value" line and notes what the relay acts on.
func (h *h1Head) field(s span) error {
	b := h.raw[:s.end]
	i := s.start
	for i < s.end && isTokenByte(b[i]) {
		i++
	}
	// No name, whitespace before the colon, or a line folded onto the
	// previous one (RFC 9112, 5.1 and 5.2): all refused.
	if i == s.start || i == s.end || b[i] != ':' {
		return badHead("malformed header field")
	}
	name := span{s.start, i}
	i++
	for i < s.end && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	end := s.end
	for end > i && (b[end-1] == ' ' || b[end-1] == '\t') {
		end--
	}
	for _, c := range b[i:end] {
		if !isValueByte(c) {
			return badHead("malformed header field value")
		}
	}
	value := span{i, end}
	if len(h.fields) == maxHeadFields {
		return errTooManyFields
	}
	h.fields = append(h.fields, field{name, value})
	return h.note(name, value)
}

// note records what the relay needs from one field.
func (h *h1Head) note(name, value span) error {
	n, v := h.bytes(name), h.bytes(value)
	switch {
	case equalFold(n, "content-length"):
		cl, ok := parseContentLength(v)
		if !ok || h.contentLength >= 0 && cl != h.contentLength {
			return badHead("invalid Content-Length")
		}
		h.contentLength = cl
	case equalFold(n, "transfer-encoding"):
		if h.chunked || !equalFold(v, "chunked") {
			return &headError{http.StatusNotImplemented, "unsupported Transfer-Encoding"}
		}
		h.chunked = true
	case equalFold(n, "connection"):
		return h.connectionTokens(value)
	case equalFold(n, "host"):
		h.hosts++
		if h.hosts > 1 || !validHost(v) {
			return badHead("invalid Host")
		}
		h.host = value
	case equalFold(n, "upgrade"):
		h.upgrade = value
	case equalFold(n, "expect"):
		h.expectContinue = equalFold(v, "100-continue")
	case equalFold(n, "te"):
		eachToken(v, value.start, func(t span) {
			if equalFold(h.bytes(t), "trailers") {
				h.teTrailers = true
			}
		})
	case equalFold(n, "grpc-status"):
		h.grpcStatus = value
	}
	return nil
}

func (h *h1Head) connectionTokens(value span) error {
	var err error
	eachToken(h.bytes(value), value.start, func(t span) {
		switch tok := h.bytes(t); {
		case equalFold(tok, "close"):
			h.connClose = true
		case equalFold(tok, "keep-alive"):
			h.connKeepAlive = true
		case equalFold(tok, "upgrade"):
			h.connUpgrade = true
		case len(h.connTokens) == maxConnTokens:
			err = errTooManyTokens
		default:
			h.connTokens = append(h.connTokens, t)
		}
	})
	return err
}

// checkRequest applies the rules that need the whole request head.
func (h *h1Head) checkRequest() error {
	switch {
	case h.chunked && h.contentLength >= 0:
		// RFC 9112, 6.3: a likely smuggling attempt; refusing is allowed.
		return badHead("both Content-Length and Transfer-Encoding")
	case h.chunked && h.minor == 0:
		return badHead("Transfer-Encoding in an HTTP/1.0 request")
	case h.minor == 1 && h.hosts == 0 && string(h.bytes(h.method)) != http.MethodConnect:
		return badHead("missing Host")
	}
	return nil
}

// keepAlive reports whether the sender of h wants its connection kept open
// after this message.
func (h *h1Head) keepAlive() bool {
	if h.minor == 0 {
		return h.connKeepAlive && !h.connClose
	}
	return !h.connClose
}

// upgrading reports whether a request asks to switch protocols.
func (h *h1Head) upgrading() bool { return h.connUpgrade && !h.upgrade.empty() }

// hopByHop reports whether field f stops at this proxy. Framing fields and
// Host are not copied either: the relay writes them itself (see emitFields).
func (h *h1Head) hopByHop(f field) bool {
	n := h.bytes(f.name)
	if len(n) == 0 || hopByHopName(n) || equalFold(n, "content-length") || equalFold(n, "host") {
		return true
	}
	for _, t := range h.connTokens {
		if equalFoldBytes(n, h.bytes(t)) {
			return true
		}
	}
	return false
}

// hopByHopName reports whether a field named n describes one hop and
// stops at a proxy, in the HTTP/1 relay and the HTTP/2 one alike: the
// fields RFC 9110 (7.6.1) names and the proxy-* ones. HTTP/2 keeps
// "te: trailers".
func hopByHopName[T string | []byte](n T) bool {
	if len(n) == 0 {
		return false
	}
	switch n[0] | 0x20 {
	case 'c':
		return equalFold(n, "connection")
	case 't':
		return equalFold(n, "te") || equalFold(n, "transfer-encoding")
	case 'k':
		return equalFold(n, "keep-alive")
	case 'p':
		return equalFold(n, "proxy-connection") || equalFold(n, "proxy-authenticate") || equalFold(n, "proxy-authorization")
	case 'u':
		return equalFold(n, "upgrade")
	}
	return false
}

// eachToken calls f with the span of each comma-separated token of v,
// trimmed; v starts at offset off of the head.
func eachToken(v []byte, off int, f func(span)) {
	start := 0
	for i := 0; i <= len(v); i++ {
		if i < len(v) && v[i] != ',' {
			continue
		}
		s, e := start, i
		for s < e && (v[s] == ' ' || v[s] == '\t') {
			s++
		}
		for e > s && (v[e-1] == ' ' || v[e-1] == '\t') {
			e--
		}
		if e > s {
			f(span{off + s, off + e})
		}
		start = i + 1
	}
}

func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// isTokenByte reports whether c may be part of a token (RFC 9110, 5.6.2).
func isTokenByte(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// isValueByte reports whether c may be part of a field value: visible
// characters, space, tab and obs-text, no other control.
func isValueByte(c byte) bool { return c >= ' ' && c != 0x7f || c == '\t' }

// validHost allows what a Host may hold: reg-name, IP literals, a port;
// as net/http's server, no '@': userinfo has no place in Host, and in a
// request target it would name credentials and obscure the authority (RFC
// 9110, 4.2.4 says to treat it as an error). Both are refused.
func validHost(v []byte) bool {
	for _, c := range v {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		switch c {
		case '!', '$', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', ':', ';', '=', '[', ']', '_', '~':
			continue
		}
		return false
	}
	return true
}

// equalFold compares b and the lower-case ASCII s case-insensitively.
func equalFold[T string | []byte](b T, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func equalFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if x >= 'A' && x <= 'Z' {
			x += 'a' - 'A'
		}
		if y >= 'A' && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
