package header

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protowire"
)

// typicalBodyLen is the body capacity allocated together with the prefix so
// that a common header costs one allocation for its bytes; longer bodies (up
// to MaxBodyLen) get their own.
const typicalBodyLen = 128

// Read reads one transport header from r and returns it. It reads exactly the
// header's bytes with io.ReadFull and never more, so the application's bytes
// that follow are left unread in r; r need not (and should not) be buffered.
//
// Read never allocates more than MaxBodyLen for the body, whatever length the
// peer announces. It does not bound time: the caller sets a read deadline on
// the connection first, as a peer could otherwise stall it forever.
//
// Errors wrap ErrBadPreface, ErrTooLong, ErrBadPort or ErrMalformed for a
// header that is not acceptable, io.ErrUnexpectedEOF when the stream ends
// inside the header, io.EOF when it ends before the first byte, or the
// reader's own error. Reason maps any of them to a metric label value.
func Read(r io.Reader) (Header, error) {
	buf := make([]byte, prefixLen, prefixLen+typicalBodyLen)
	n, err := io.ReadFull(r, buf)
	if k := min(n, len(Preface)); string(buf[:k]) != Preface[:k] {
		return Header{}, ErrBadPreface
	}
	if err != nil {
		return Header{}, fmt.Errorf("header: read preface: %w", err)
	}
	length := binary.BigEndian.Uint32(buf[len(Preface):])
	if length > MaxBodyLen {
		return Header{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLong, length, MaxBodyLen)
	}
	var body []byte
	if int(length) <= cap(buf)-prefixLen {
		body = buf[prefixLen : prefixLen+int(length)]
	} else {
		body = make([]byte, length)
	}
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Header{}, fmt.Errorf("header: read body: %w", err)
	}
	return decodeBody(body)
}

// decodeBody decodes the protobuf Header message in b with proto3 semantics:
// unknown fields are skipped, a repeated scalar field keeps its last value, and
// repeated session_protocol messages merge. Known fields with the wrong wire
// type are refused rather than skipped, as a well-behaved encoder never sends
// them.
func decodeBody(b []byte) (Header, error) {
	var (
		port  uint64
		name  []byte
		proto SessionProtocol
	)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return Header{}, malformed("field tag", n)
		}
		b = b[n:]
		switch num {
		case fieldPort:
			if typ != protowire.VarintType {
				return Header{}, wrongType("port", typ)
			}
			port, n = protowire.ConsumeVarint(b)
		case fieldName:
			if typ != protowire.BytesType {
				return Header{}, wrongType("name", typ)
			}
			name, n = protowire.ConsumeBytes(b)
		case fieldSessionProtocol:
			if typ != protowire.BytesType {
				return Header{}, wrongType("session_protocol", typ)
			}
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n >= 0 {
				p, err := decodeSessionProtocol(v)
				if err != nil {
					return Header{}, err
				}
				if p != None { // merging an unset oneof keeps the earlier value
					proto = p
				}
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return Header{}, malformed(fmt.Sprintf("field %d", num), n)
		}
		b = b[n:]
	}
	// The port is an int32 on the wire; anything outside 1..65535, including
	// a negative int32 or a value that would only fit after truncation to 32
	// bits, is refused rather than wrapped around.
	if port == 0 || port > 65535 {
		return Header{}, fmt.Errorf("%w: %d", ErrBadPort, int64(port))
	}
	if len(name) > MaxNameLen { // checked before copying the name
		return Header{}, fmt.Errorf("%w: name is %d bytes, longer than %d", ErrMalformed, len(name), MaxNameLen)
	}
	h := Header{Port: uint16(port), Name: string(name), SessionProtocol: proto}
	if err := checkName(h.Name, h.SessionProtocol); err != nil {
		return Header{}, err
	}
	return h, nil
}

// decodeSessionProtocol decodes a SessionProtocol message: a oneof of the
// empty messages Http1 and Http2, the last one present winning.
func decodeSessionProtocol(b []byte) (SessionProtocol, error) {
	p := None
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return None, malformed("session_protocol field tag", n)
		}
		b = b[n:]
		switch num {
		case fieldHTTP1, fieldHTTP2:
			if typ != protowire.BytesType {
				return None, wrongType("session_protocol kind", typ)
			}
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n >= 0 {
				if err := skipFields(v); err != nil {
					return None, err
				}
				p = HTTP1
				if num == fieldHTTP2 {
					p = HTTP2
				}
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return None, malformed(fmt.Sprintf("session_protocol field %d", num), n)
		}
		b = b[n:]
	}
	return p, nil
}

// skipFields checks that b is a well-formed message with only unknown fields:
// the contents of the empty Http1 and Http2 messages, which later versions may
// extend.
func skipFields(b []byte) error {
	for len(b) > 0 {
		_, _, n := protowire.ConsumeField(b)
		if n < 0 {
			return malformed("session_protocol kind field", n)
		}
		b = b[n:]
	}
	return nil
}

func malformed(what string, code int) error {
	return fmt.Errorf("%w: %s: %w", ErrMalformed, what, protowire.ParseError(code))
}

func wrongType(field string, typ protowire.Type) error {
	return fmt.Errorf("%w: %s has wire type %d", ErrMalformed, field, typ)
}
