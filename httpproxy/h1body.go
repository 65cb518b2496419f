package httpproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"sync"
)

// writeError marks an error writing to the receiving side of a body, to
// tell a receiver that went away from a sender that cut its body short.
type writeError struct{ err error }

func (e *writeError) Error() string { return "write: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

var errMalformedChunk = errors.New("malformed chunked encoding")

// bodyCopy copies one message body from src to dst. It flushes dst
// whenever src has nothing more buffered, before blocking for more: a
// streamed body (server-sent events, a long download) goes out as it comes,
// and a small body goes out with its head in one write.
type bodyCopy struct {
	dst *bufio.Writer
	src *bufio.Reader
	// bufs lends buf, taken on the first read that needs it: a body
	// already read with its head needs none.
	bufs *sync.Pool
	buf  *[]byte
}

func (b *bodyCopy) release() {
	if b.buf != nil {
		b.bufs.Put(b.buf)
		b.buf = nil
	}
}

func (b *bodyCopy) flushIfDrained() error {
	if b.src.Buffered() == 0 && b.dst.Buffered() > 0 {
		if err := b.dst.Flush(); err != nil {
			return &writeError{err}
		}
	}
	return nil
}

// n copies n bytes, or until src ends when n < 0 (a close-delimited body).
func (b *bodyCopy) n(n int64) error {
	for done := int64(0); n < 0 || done < n; {
		if err := b.flushIfDrained(); err != nil {
			return err
		}
		var p []byte
		var err error
		if k := b.src.Buffered(); k > 0 {
			if n >= 0 {
				k = int(min(int64(k), n-done))
			}
			p, _ = b.src.Peek(k)
			_, _ = b.src.Discard(k)
		} else {
			if b.buf == nil {
				b.buf = b.bufs.Get().(*[]byte)
			}
			p = *b.buf
			if n >= 0 && int64(len(p)) > n-done {
				p = p[:n-done]
			}
			var m int
			m, err = b.src.Read(p)
			p = p[:m]
		}
		if len(p) > 0 {
			if _, werr := b.dst.Write(p); werr != nil {
				return &writeError{werr}
			}
			done += int64(len(p))
		}
		switch {
		case err == io.EOF && n < 0:
			return nil
		case err == io.EOF:
			return io.ErrUnexpectedEOF
		case err != nil:
			return err
		}
	}
	return nil
}

// chunked copies a chunked body (RFC 9112, 7.1) chunk by chunk, dropping
// chunk extensions, and then its trailer section, parsed into trailers.
// With data, only the chunks' data is written: for an HTTP/1.0 receiver.
func (b *bodyCopy) chunked(trailers *h1Head, dataOnly bool) error {
	for {
		if err := b.flushIfDrained(); err != nil {
			return err
		}
		size, err := readChunkSize(b.src)
		if err != nil {
			return err
		}
		if size == 0 {
			break
		}
		if !dataOnly {
			if err := b.write(strconv.AppendUint(b.dst.AvailableBuffer(), size, 16), "\r\n"); err != nil {
				return err
			}
		}
		if err := b.n(int64(size)); err != nil {
			return err
		}
		var crlf [2]byte
		if _, err := io.ReadFull(b.src, crlf[:]); err != nil {
			return unexpected(err)
		}
		if crlf != [2]byte{'\r', '\n'} {
			return errMalformedChunk
		}
		if !dataOnly {
			if err := b.write(nil, "\r\n"); err != nil {
				return err
			}
		}
	}
	if err := readTrailers(b.src, trailers); err != nil {
		return err
	}
	if dataOnly {
		return nil
	}
	if err := b.write(nil, "0\r\n"); err != nil {
		return err
	}
	for _, f := range trailers.fields {
		if err := writeField(b.dst, trailers, f); err != nil {
			return &writeError{err}
		}
	}
	return b.write(nil, "\r\n")
}

func (b *bodyCopy) write(p []byte, s string) error {
	if _, err := b.dst.Write(p); err != nil {
		return &writeError{err}
	}
	if _, err := b.dst.WriteString(s); err != nil {
		return &writeError{err}
	}
	return nil
}

// readChunkSize reads a chunk's size line: hex digits, optional extensions.
// Only CRLF ends it and no other CR is in it (RFC 9112, 7.1; its erratum
// 7633 refuses a bare LF there): a parser before the relay that reads the
// line differently would see other chunks, and a request smuggled in them.
// net/http refuses the same.
func readChunkSize(br *bufio.Reader) (uint64, error) {
	line, err := readCRLFLine(br)
	if err != nil {
		return 0, err
	}
	var size uint64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			goto end
		}
		if i == 15 { // 16 hex digits would overflow what a length can be
			return 0, errMalformedChunk
		}
		size = size<<4 | uint64(d)
	}
end:
	if i == 0 {
		return 0, errMalformedChunk
	}
	rest := line[i:]
	if len(rest) > 0 && rest[0] == ';' {
		// Extensions right after the size, as net/http takes them.
		if !validChunkExt(rest) {
			return 0, errMalformedChunk
		}
		return size, nil
	}
	for _, c := range rest {
		if c != ' ' && c != '\t' {
			return 0, errMalformedChunk
		}
	}
	return size, nil
}

// readCRLFLine reads one line of a chunked body ended by CRLF, with no
// other CR or LF in it, and returns it without the CRLF. It is only good
// until the next read of br.
func readCRLFLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	switch {
	case err == bufio.ErrBufferFull:
		return nil, errMalformedChunk
	case err != nil:
		return nil, unexpected(err)
	}
	line = line[:len(line)-1]
	if len(line) == 0 || line[len(line)-1] != '\r' || bytes.IndexByte(line[:len(line)-1], '\r') >= 0 {
		return nil, errMalformedChunk
	}
	return line[:len(line)-1], nil
}

// validChunkExt reports whether ext holds only what chunk extensions are
// made of (RFC 9112, 7.1.1): tokens, '=', ';', whitespace and quoted
// strings. The relay drops them, but bytes beyond those are where parsers
// part ways.
func validChunkExt(ext []byte) bool {
	for i := 0; i < len(ext); i++ {
		c := ext[i]
		switch {
		case c == '"':
			for i++; i < len(ext) && ext[i] != '"'; i++ {
				if ext[i] == '\\' {
					i++
				}
				if i == len(ext) || !isValueByte(ext[i]) {
					return false
				}
			}
			if i == len(ext) {
				return false // unterminated
			}
		case isTokenByte(c) || c == ';' || c == '=' || c == ' ' || c == '\t':
		default:
			return false
		}
	}
	return true
}

// readTrailers reads the trailer section ending a chunked body into h: its
// fields, and what note finds in them (grpc-status). Its lines, like the
// chunk lines, end with CRLF only: the empty line ending the body is the
// last place where a bare LF could make two parsers disagree.
func readTrailers(br *bufio.Reader, h *h1Head) error {
	h.reset()
	h.raw = h.raw[:0]
	for {
		start := len(h.raw)
		for {
			part, err := br.ReadSlice('\n')
			if len(h.raw)+len(part) > maxHeadBytes {
				return errHeadTooLarge
			}
			h.raw = append(h.raw, part...)
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil {
				return unexpected(err)
			}
			break
		}
		end := len(h.raw) - 1
		if end == start || h.raw[end-1] != '\r' {
			return errMalformedChunk
		}
		end--
		if end == start {
			return nil
		}
		if err := h.field(span{start, end}); err != nil {
			return err
		}
	}
}

// writeField writes one field of h as "name: value".
func writeField(w *bufio.Writer, h *h1Head, f field) error {
	_, _ = w.Write(h.bytes(f.name))
	_, _ = w.WriteString(": ")
	_, _ = w.Write(h.bytes(f.value))
	_, err := w.WriteString("\r\n")
	return err
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
