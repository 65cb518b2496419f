package header

import (
	"encoding"
	"encoding/binary"
	"fmt"
	"io"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers, from header.proto.
const (
	fieldPort            protowire.Number = 1 // Header.port, int32
	fieldName            protowire.Number = 2 // Header.name, string
	fieldSessionProtocol protowire.Number = 3 // Header.session_protocol, message
	fieldHTTP1           protowire.Number = 1 // SessionProtocol.http1, message
	fieldHTTP2           protowire.Number = 2 // SessionProtocol.http2, message
)

// maxEncodedLen is the longest frame this version encodes: the prefix, the
// port (tag + 3-byte varint), the name (tag + 2-byte length + MaxNameLen
// bytes) and the session protocol (tag, length, inner tag, inner length).
const maxEncodedLen = prefixLen + (1 + 3) + (1 + 2 + MaxNameLen) + (1 + 1 + 1 + 1)

var _ encoding.BinaryAppender = Header{}

// AppendBinary appends the complete encoded header (preface, length and body)
// to b and returns the extended slice. It refuses, leaving b unchanged, a
// header that Read would refuse: port 0 (ErrBadPort), or a name that is not
// UTF-8 or is longer than MaxNameLen, or an unknown SessionProtocol
// (ErrMalformed).
func (h Header) AppendBinary(b []byte) ([]byte, error) {
	if err := h.validate(); err != nil {
		return b, err
	}
	b = append(b, Preface...)
	b = binary.BigEndian.AppendUint32(b, uint32(h.bodyLen()))
	b = protowire.AppendTag(b, fieldPort, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(h.Port))
	if h.Name != "" {
		b = protowire.AppendTag(b, fieldName, protowire.BytesType)
		b = protowire.AppendString(b, h.Name)
	}
	if h.SessionProtocol != None {
		inner := fieldHTTP1
		if h.SessionProtocol == HTTP2 {
			inner = fieldHTTP2
		}
		b = protowire.AppendTag(b, fieldSessionProtocol, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(protowire.SizeTag(inner)+1))
		b = protowire.AppendTag(b, inner, protowire.BytesType)
		b = protowire.AppendVarint(b, 0) // Http1 and Http2 are empty messages.
	}
	return b, nil
}

// bodyLen is the length of the protobuf body AppendBinary encodes for a valid h.
func (h Header) bodyLen() int {
	n := protowire.SizeTag(fieldPort) + protowire.SizeVarint(uint64(h.Port))
	if h.Name != "" {
		n += protowire.SizeTag(fieldName) + protowire.SizeBytes(len(h.Name))
	}
	if h.SessionProtocol != None {
		n += protowire.SizeTag(fieldSessionProtocol) + protowire.SizeBytes(2)
	}
	return n
}

// validate reports whether h may be sent; Read applies the same rules.
func (h Header) validate() error {
	if h.Port == 0 {
		return fmt.Errorf("%w: port 0", ErrBadPort)
	}
	return checkName(h.Name, h.SessionProtocol)
}

// checkName checks the name and session protocol rules shared by encoding and
// decoding.
func checkName(name string, p SessionProtocol) error {
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: name is %d bytes, longer than %d", ErrMalformed, len(name), MaxNameLen)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: name is not valid UTF-8", ErrMalformed)
	}
	if p > HTTP2 {
		return fmt.Errorf("%w: unknown session protocol %d", ErrMalformed, p)
	}
	return nil
}

// Write encodes h and writes it to w in a single Write call, so that over TLS
// the header travels in one record ahead of the application's bytes. It does
// not set deadlines; the caller bounds the write.
func Write(w io.Writer, h Header) error {
	b, err := h.AppendBinary(make([]byte, 0, maxEncodedLen))
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("header: write: %w", err)
	}
	return nil
}
