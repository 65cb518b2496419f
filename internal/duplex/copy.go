package duplex

import (
	"errors"
	"io"
	"net"
)

// Unwrapper is implemented by conn wrappers (byte counters, replaying
// readers) that add bookkeeping around another conn. Join looks through
// Unwrap to decide whether a direction can use the kernel's splice, so a
// wrapper that implements Unwrap promises to forward ReadFrom and WriteTo to
// the conn it wraps (and to implement both), as the metrics package's
// counting conn does. A *tls.Conn is not an Unwrapper: its NetConn method
// exposes the ciphertext conn, which must never be copied directly.
type Unwrapper interface {
	Unwrap() net.Conn
}

// splices reports whether c is, or wraps, a plain TCP connection, whose
// ReadFrom and WriteTo let io.Copy move bytes with splice(2) on Linux and
// without a userspace buffer.
func splices(c net.Conn) bool {
	for range 8 { // bounded, in case a wrapper unwraps to itself
		switch v := c.(type) {
		case *net.TCPConn:
			return true
		case Unwrapper:
			c = v.Unwrap()
		default:
			return false
		}
	}
	return false
}

// copyOne copies src to dst until src's EOF or an error, returning the bytes
// written. TCP to TCP goes through io.Copy, which reaches splice via
// TCPConn.ReadFrom; any other pair goes through copyBuffered. ReadFrom and
// WriteTo are never used there: TCPConn.ReadFrom reading from a TLS conn
// allocates its own 32 KiB buffer.
func copyOne(dst, src net.Conn, pool *BufferPool) (int64, error) {
	if splices(dst) && splices(src) {
		return io.Copy(dst, src)
	}
	return copyBuffered(dst, src, pool)
}

// idleBufferSize is the buffer a direction reads into while it is idle. A
// sidecar holds thousands of mostly idle connections, each with two
// directions per leg blocked in Read; a pool buffer held there would pin
// DefaultBufferSize bytes per direction for nothing.
const idleBufferSize = 2 << 10

// burstRead is the read size that keeps a direction on its pool buffer: a
// full TLS record (16 KiB of plaintext) or more says the sender has more
// queued; anything shorter says the burst is over.
const burstRead = 16 << 10

// copyBuffered copies src to dst through a small buffer of its own while the
// traffic is light, and a buffer borrowed from pool only while a burst lasts:
// a read that fills the small buffer borrows the pool buffer for the next
// reads, and a read shorter than a TLS record gives it back. Idle
// connections then hold idleBufferSize bytes per direction, and bulk
// transfers still read in DefaultBufferSize chunks.
func copyBuffered(dst io.Writer, src io.Reader, pool *BufferPool) (written int64, err error) {
	small := make([]byte, idleBufferSize)
	var big *[]byte
	defer func() {
		if big != nil {
			pool.Put(big)
		}
	}()
	for {
		buf := small
		if big != nil {
			buf = *big
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			m, werr := dst.Write(buf[:n])
			written += int64(m)
			if werr != nil {
				return written, werr
			}
			if m != n {
				return written, io.ErrShortWrite
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return written, nil
			}
			return written, rerr
		}
		switch {
		case big == nil && n == len(small):
			big = pool.Get()
		case big != nil && n < burstRead:
			pool.Put(big)
			big = nil
		}
	}
}

// closeWrite shuts down the writing side of c, telling its peer that no more
// bytes will come (a TCP FIN; for TLS, a close_notify alert) while c can still
// read. A conn without CloseWrite, or whose CloseWrite reports
// errors.ErrUnsupported (a wrapper around such a conn), cannot half-close; it
// is left as it is, since closing it fully would cut off the direction still
// flowing. Its peer then sees the end only when Join closes both conns.
func closeWrite(c net.Conn) error {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return nil
	}
	if err := cw.CloseWrite(); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	return nil
}
