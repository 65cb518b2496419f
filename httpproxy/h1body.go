package httpproxy

import (
	"bufio"
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
func readChunkSize(br *bufio.Reader) (uint64, error) {
	line, err := br.ReadSlice('\n')
	switch {
	case err == bufio.ErrBufferFull:
		return 0, errMalformedChunk
	case err != nil:
		return 0, unexpected(err)
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
	for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
		rest = rest[1:]
	}
	switch {
	case len(rest) > 0 && rest[0] == ';':
		for _, c := range rest[:len(rest)-1] {
			if c != '\r' && !isValueByte(c) {
				return 0, errMalformedChunk
			}
		}
	case string(rest) != "\r\n" && string(rest) != "\n":
		return 0, errMalformedChunk
	}
	return size, nil
}

// readTrailers reads the trailer section ending a chunked body into h: its
// fields, and what note finds in them (grpc-status).
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
		if end > start && h.raw[end-1] == '\r' {
			end--
		}
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
