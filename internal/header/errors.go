package header

import (
	"errors"
	"io"
)

// Errors returned (wrapped) by Read, Write and Header.AppendBinary; check them
// with errors.Is. A stream that ends inside the header yields an error wrapping
// io.ErrUnexpectedEOF, or io.EOF when it ended before the first byte.
var (
	// ErrBadPreface means the stream did not start with Preface: the peer
	// does not speak this protocol or version.
	ErrBadPreface = errors.New("header: bad preface")
	// ErrTooLong means the announced body length exceeds MaxBodyLen.
	ErrTooLong = errors.New("header: body too long")
	// ErrBadPort means the port is absent, 0 or above 65535.
	ErrBadPort = errors.New("header: bad port")
	// ErrMalformed means the body is not a valid Header message: broken
	// protobuf framing, a known field with the wrong wire type, a name that
	// is not UTF-8 or longer than MaxNameLen, or (when encoding) an unknown
	// SessionProtocol.
	ErrMalformed = errors.New("header: malformed body")
)

// Reason maps an error from this package to a short, bounded label value for
// metrics and logs: "bad_preface", "too_long", "bad_port", "malformed",
// "truncated" (the stream ended inside the header, including before its first
// byte) or "io" (any other error, such as a read deadline or a reset). It
// returns "" for a nil error.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrBadPreface):
		return "bad_preface"
	case errors.Is(err, ErrTooLong):
		return "too_long"
	case errors.Is(err, ErrBadPort):
		return "bad_port"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "truncated"
	default:
		return "io"
	}
}
