package httpproxy

import (
	"io"
	"sync"
)

// h2SmallRead is the read buffer a connection keeps while it waits for its
// peer: enough for the frames of a few requests.
const h2SmallRead = 4 << 10

// h2reader buffers a connection's reads as a bufio.Reader would, but holds
// a large buffer only while its peer sends faster than it is read: it
// borrows one from a pool when a read fills its small buffer, and gives it
// back before waiting for the network (idle). An idle connection holds
// h2SmallRead bytes, not h2ReadBuffer. Used by the connection's reader
// only.
type h2reader struct {
	rd    io.Reader
	pool  *sync.Pool // of *[]byte, h2ReadBuffer long
	big   *[]byte    // borrowed, or nil
	small []byte
	buf   []byte // small or *big
	r, w  int    // buf[r:w] is buffered
	full  bool   // the last read filled what it was given: more may wait
	err   error
}

func newH2Reader(rd io.Reader, pool *sync.Pool) *h2reader {
	small := make([]byte, h2SmallRead)
	return &h2reader{rd: rd, pool: pool, small: small, buf: small}
}

func (b *h2reader) Read(p []byte) (int, error) {
	if b.r == b.w {
		if b.err != nil {
			err := b.err
			b.err = nil
			return 0, err
		}
		if b.full && b.big == nil {
			b.big = b.pool.Get().(*[]byte)
			b.buf = (*b.big)[:cap(*b.big)]
		}
		if len(p) >= len(b.buf) {
			// Straight into p, as bufio does: no copy.
			n, err := b.rd.Read(p)
			b.full = n == len(p)
			return n, err
		}
		b.r, b.w = 0, 0
		n, err := b.rd.Read(b.buf)
		b.w, b.err, b.full = n, err, n == len(b.buf)
		if n == 0 {
			b.err = nil
			return 0, err
		}
	}
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	return n, nil
}

// Buffered returns how many bytes can be read without waiting.
func (b *h2reader) Buffered() int { return b.w - b.r }

// Peek returns the next n buffered bytes; unlike bufio's, it does not
// read: n must be at most Buffered().
func (b *h2reader) Peek(n int) ([]byte, error) {
	if n > b.w-b.r {
		return nil, io.ErrShortBuffer
	}
	return b.buf[b.r : b.r+n], nil
}

// idle is told that the reader is about to wait for the network: the
// large buffer goes back to the pool unless the last read filled it (more
// is on its way) or what is buffered does not fit the small one.
func (b *h2reader) idle() {
	if b.big == nil || b.full || b.w-b.r > len(b.small) {
		return
	}
	b.w = copy(b.small, b.buf[b.r:b.w])
	b.r = 0
	b.buf = b.small
	b.pool.Put(b.big)
	b.big = nil
}

// h2bufWriter buffers a connection's writes as a bufio.Writer would, in a
// buffer borrowed from a pool while there is something to write: Flush
// gives it back, so an idle connection holds none. Used by the
// connection's writer only.
type h2bufWriter struct {
	w    io.Writer
	pool *sync.Pool // of *[]byte, h2WriteBuffer long
	buf  *[]byte
	n    int // (*buf)[:n] is buffered
	err  error
}

func (b *h2bufWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if b.err != nil {
			return written, b.err
		}
		if b.buf == nil {
			b.buf = b.pool.Get().(*[]byte)
		}
		if b.n == 0 && len(p) >= len(*b.buf) {
			n, err := b.w.Write(p)
			if err == nil && n < len(p) {
				err = io.ErrShortWrite
			}
			b.err = err
			return written + n, err
		}
		k := copy((*b.buf)[b.n:], p)
		b.n += k
		written += k
		p = p[k:]
		if b.n == len(*b.buf) {
			b.write()
		}
	}
	return written, nil
}

func (b *h2bufWriter) WriteString(s string) (int, error) { return b.Write([]byte(s)) }

// write writes what is buffered, keeping the buffer.
func (b *h2bufWriter) write() {
	if b.n > 0 && b.err == nil {
		n, err := b.w.Write((*b.buf)[:b.n])
		if err == nil && n < b.n {
			err = io.ErrShortWrite
		}
		b.err = err
	}
	b.n = 0
}

// Flush writes what is buffered and gives the buffer back.
func (b *h2bufWriter) Flush() error {
	b.write()
	if b.buf != nil {
		b.pool.Put(b.buf)
		b.buf = nil
	}
	return b.err
}
