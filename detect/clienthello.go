package detect

import "errors"

// This file parses just enough of a TLS ClientHello (RFC 8446, 4.1.2; RFC
// 5246, 7.4.1.2) to read the server name (RFC 6066, 3) and the ALPN list (RFC
// 7301, 3.1). The bytes come from an unauthenticated client, so every length
// is checked against what is actually there before it is used, and nothing
// returned aliases the input (which is a pooled buffer).

// TLS wire constants.
const (
	recordTypeHandshake    = 0x16
	recordHeaderLen        = 5
	maxRecordPayload       = 1 << 14 // TLSPlaintext.length limit
	handshakeTypeHello     = 1
	handshakeHeaderLen     = 4
	maxClientHelloLen      = 1 << 16 // as crypto/tls's maxHandshake
	extensionServerName    = 0
	extensionALPN          = 16
	serverNameTypeHostName = 0
	maxHostNameLen         = 253
	// maxALPN bounds how many ALPN names are kept, since they are only used
	// for labels and a client could offer thousands.
	maxALPN = 16
)

// Parse errors. errIncomplete is not a verdict: the bytes so far are a valid
// beginning of a ClientHello and more are needed.
var (
	errIncomplete = errors.New("incomplete TLS ClientHello")
	errMalformed  = errors.New("malformed TLS ClientHello")
)

// clientHello is what the proxy wants from a ClientHello.
type clientHello struct {
	serverName string   // valid DNS name, lower case, or empty
	alpn       []string // offered protocols, at most maxALPN
}

// parseClientHello parses the ClientHello at the start of b, the first bytes
// of a connection. It returns errIncomplete while b is a valid prefix of a
// ClientHello and errMalformed as soon as it cannot be one. Bytes after the
// ClientHello (such as early data) are ignored.
func parseClientHello(b []byte) (clientHello, error) {
	return (*interner)(nil).parseClientHello(b)
}

// parseClientHello is the package's parseClientHello with the server name
// and ALPN list taken from in when seen before; a nil in allocates them.
func (in *interner) parseClientHello(b []byte) (clientHello, error) {
	msg, err := clientHelloMessage(b)
	if err != nil {
		return clientHello{}, err
	}
	return in.parseClientHelloBody(msg)
}

// clientHelloMessage returns the body of the handshake message at the start
// of the handshake records in b. The message normally sits in the first
// record and is returned without copying; a message fragmented over several
// records is joined into a new slice.
func clientHelloMessage(b []byte) ([]byte, error) {
	var (
		hs     []byte // handshake bytes gathered so far
		copied bool   // hs is a copy rather than a sub-slice of b
	)
	for {
		if err := checkRecordHeader(b); err != nil {
			return nil, err
		}
		if len(b) < recordHeaderLen {
			return nil, errIncomplete
		}
		n := int(b[3])<<8 | int(b[4])
		if n == 0 || n > maxRecordPayload {
			return nil, errMalformed
		}
		end := min(len(b), recordHeaderLen+n)
		payload := b[recordHeaderLen:end]
		switch {
		case hs == nil:
			hs = payload
		case !copied:
			joined := make([]byte, 0, len(hs)+len(payload))
			hs = append(append(joined, hs...), payload...)
			copied = true
		default:
			hs = append(hs, payload...)
		}
		if len(hs) > 0 && hs[0] != handshakeTypeHello {
			return nil, errMalformed
		}
		if len(hs) >= handshakeHeaderLen {
			msgLen := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
			if msgLen > maxClientHelloLen {
				return nil, errMalformed
			}
			if need := handshakeHeaderLen + msgLen; len(hs) >= need {
				return hs[handshakeHeaderLen:need], nil
			}
		}
		if end < recordHeaderLen+n {
			return nil, errIncomplete // the record itself is still arriving
		}
		b = b[end:]
	}
}

// checkRecordHeader checks the part of a TLS record header that b holds: a
// handshake record of a TLS version (legacy_record_version 0x0300–0x0304).
func checkRecordHeader(b []byte) error {
	switch {
	case len(b) == 0:
		return errIncomplete
	case b[0] != recordTypeHandshake:
		return errMalformed
	case len(b) > 1 && b[1] != 3:
		return errMalformed
	case len(b) > 2 && b[2] > 4:
		return errMalformed
	}
	return nil
}

// parseClientHelloBody parses a complete ClientHello message body. The
// server name and ALPN list are turned into strings only once the whole
// message is known to be well-formed.
func (in *interner) parseClientHelloBody(msg []byte) (clientHello, error) {
	r := cursor(msg)
	var (
		host    cursor // the first host_name, raw
		alpn    cursor // the protocol_name_list, checked
		version uint16
		session cursor
		suites  cursor
		comp    cursor
	)
	if !r.readU16(&version) || version>>8 != 3 ||
		!r.skip(32) || // random
		!r.readVec8(&session) || len(session) > 32 ||
		!r.readVec16(&suites) || len(suites) == 0 || len(suites)%2 != 0 ||
		!r.readVec8(&comp) || len(comp) == 0 {
		return clientHello{}, errMalformed
	}
	if len(r) == 0 {
		return clientHello{}, nil // no extensions, as in some TLS 1.0–1.2 clients
	}
	var exts cursor
	if !r.readVec16(&exts) || len(r) != 0 {
		return clientHello{}, errMalformed
	}
	var seenSNI, seenALPN bool
	for len(exts) > 0 {
		var (
			typ  uint16
			data cursor
		)
		if !exts.readU16(&typ) || !exts.readVec16(&data) {
			return clientHello{}, errMalformed
		}
		var ok bool
		switch typ {
		case extensionServerName:
			if seenSNI {
				return clientHello{}, errMalformed
			}
			seenSNI = true
			host, ok = parseServerName(data)
		case extensionALPN:
			if seenALPN {
				return clientHello{}, errMalformed
			}
			seenALPN = true
			alpn, ok = parseALPN(data)
		default:
			ok = true
		}
		if !ok {
			return clientHello{}, errMalformed
		}
	}
	return clientHello{serverName: in.hostName(host), alpn: in.protocols(alpn)}, nil
}

// parseServerName parses a server_name extension and returns its first
// host name, raw (nil when there is none).
func parseServerName(data cursor) (cursor, bool) {
	var list cursor
	if !data.readVec16(&list) || len(data) != 0 || len(list) == 0 {
		return nil, false
	}
	var name cursor
	for len(list) > 0 {
		var (
			typ  uint8
			host cursor
		)
		if !list.readU8(&typ) || !list.readVec16(&host) || len(host) == 0 {
			return nil, false
		}
		if typ == serverNameTypeHostName && name == nil {
			name = host
		}
	}
	return name, true
}

// normalizeHostName writes h lower-cased without a trailing dot to dst and
// returns it if it is a plausible DNS name (letters, digits, '-', '_', '.';
// at most 253 bytes), or returns nil (such names are not errors: they are
// simply not reported).
func normalizeHostName(dst *[maxHostNameLen]byte, h []byte) []byte {
	if len(h) > 0 && h[len(h)-1] == '.' {
		h = h[:len(h)-1]
	}
	if len(h) == 0 || len(h) > maxHostNameLen {
		return nil
	}
	lower := dst[:len(h)]
	for i, c := range h {
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return nil
		}
		lower[i] = c
	}
	return lower
}

// parseALPN checks an application_layer_protocol_negotiation extension and
// returns its protocol_name_list.
func parseALPN(data cursor) (cursor, bool) {
	var list cursor
	if !data.readVec16(&list) || len(data) != 0 || len(list) == 0 {
		return nil, false
	}
	for rest := list; len(rest) > 0; {
		var name cursor
		if !rest.readVec8(&name) || len(name) == 0 {
			return nil, false
		}
	}
	return list, true
}

// protocolNames returns the names of a checked protocol_name_list, at most
// maxALPN of them.
func protocolNames(list cursor) []string {
	var names []string
	for len(list) > 0 && len(names) < maxALPN {
		var name cursor
		list.readVec8(&name)
		names = append(names, string(name))
	}
	return names
}

// cursor reads big-endian integers and length-prefixed vectors from the
// front of a byte slice, refusing any read that would pass its end.
type cursor []byte

func (c *cursor) readU8(v *uint8) bool {
	if len(*c) < 1 {
		return false
	}
	*v = (*c)[0]
	*c = (*c)[1:]
	return true
}

func (c *cursor) readU16(v *uint16) bool {
	if len(*c) < 2 {
		return false
	}
	*v = uint16((*c)[0])<<8 | uint16((*c)[1])
	*c = (*c)[2:]
	return true
}

func (c *cursor) skip(n int) bool {
	if len(*c) < n {
		return false
	}
	*c = (*c)[n:]
	return true
}

// readVec8 reads a vector with a one-byte length prefix.
func (c *cursor) readVec8(v *cursor) bool {
	var n uint8
	return c.readU8(&n) && c.readN(int(n), v)
}

// readVec16 reads a vector with a two-byte length prefix.
func (c *cursor) readVec16(v *cursor) bool {
	var n uint16
	return c.readU16(&n) && c.readN(int(n), v)
}

func (c *cursor) readN(n int, v *cursor) bool {
	if len(*c) < n {
		return false
	}
	*v = (*c)[:n:n]
	*c = (*c)[n:]
	return true
}
