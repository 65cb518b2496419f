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
// TCPConn.ReadFrom; any other pair gets a buffer from pool through io.CopyBuffer,
// with ReadFrom and WriteTo hidden so that io.CopyBuffer really uses it (it
// would otherwise defer to those methods, and TCPConn.ReadFrom reading from a
// TLS conn allocates its own 32 KiB buffer).
func copyOne(dst, src net.Conn, pool *BufferPool) (int64, error) {
	if splices(dst) && splices(src) {
		return io.Copy(dst, src)
	}
	buf := pool.Get()
	defer pool.Put(buf)
	return io.CopyBuffer(writerOnly{dst}, readerOnly{src}, *buf)
}

// readerOnly hides every method of a conn but Read (notably WriteTo).
type readerOnly struct{ r io.Reader }

func (r readerOnly) Read(p []byte) (int, error) { return r.r.Read(p) }

// writerOnly hides every method of a conn but Write (notably ReadFrom).
type writerOnly struct{ w io.Writer }

func (w writerOnly) Write(p []byte) (int, error) { return w.w.Write(p) }

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
