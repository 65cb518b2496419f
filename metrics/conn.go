package metrics

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Conn is a net.Conn that counts the transport metrics of the conn it wraps.
// Transport.Track returns one. Its counters are resolved once, when it is
// created, so reads and writes cost an atomic add and no allocation.
//
// It forwards deadlines, CloseWrite and CloseRead (reporting
// errors.ErrUnsupported when the wrapped conn lacks them), and ReadFrom and
// WriteTo, so that a TCP connection wrapped on both sides still copies with
// splice(2). Unwrap returns the wrapped conn.
type Conn struct {
	conn     net.Conn
	t        *Transport
	labels   Labels
	read     prometheus.Counter
	written  prometheus.Counter
	open     prometheus.Gauge
	duration prometheus.Observer
	start    time.Time

	errno     atomic.Uintptr // the first syscall.Errno seen, 0 if none
	closeOnce sync.Once
}

var (
	_ io.ReaderFrom = (*Conn)(nil)
	_ io.WriterTo   = (*Conn)(nil)
)

// Read reads from the wrapped conn, counting the bytes.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.conn.Read(p)
	if n > 0 {
		c.read.Add(float64(n))
	}
	if err != nil {
		c.noteErr(err)
	}
	return n, err
}

// Write writes to the wrapped conn, counting the bytes.
func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.conn.Write(p)
	if n > 0 {
		c.written.Add(float64(n))
	}
	if err != nil {
		c.noteErr(err)
	}
	return n, err
}

// ReadFrom copies r into the conn with the wrapped conn's ReadFrom when it has
// one (for TCP, splice from another TCP conn), counting the bytes written.
// Since the kernel cannot say which side of a splice failed, an OS error from
// it is recorded on this conn as well as returned.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := c.conn.(io.ReaderFrom)
	if !ok {
		return io.Copy(writeOnly{c}, r) // counted by c.Write
	}
	n, err := rf.ReadFrom(r)
	if n > 0 {
		c.written.Add(float64(n))
	}
	if err != nil {
		c.noteErr(err)
	}
	return n, err
}

// WriteTo copies the conn into w with the wrapped conn's WriteTo when it has
// one, counting the bytes read. Errors are recorded as for ReadFrom.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	wt, ok := c.conn.(io.WriterTo)
	if !ok {
		return io.Copy(w, readOnly{c}) // counted by c.Read
	}
	n, err := wt.WriteTo(w)
	if n > 0 {
		c.read.Add(float64(n))
	}
	if err != nil {
		c.noteErr(err)
	}
	return n, err
}

// Close closes the wrapped conn. The first call also records the close, with
// the first OS error the conn met as its errno label, and the connection's
// lifetime; later calls only forward to the wrapped conn.
func (c *Conn) Close() error {
	err := c.conn.Close()
	c.closeOnce.Do(func() {
		if err != nil {
			c.noteErr(err)
		}
		c.open.Dec()
		c.duration.Observe(float64(time.Since(c.start)) / float64(time.Millisecond))
		c.t.closeTotal.WithLabelValues(c.labels.values(errnoName(syscall.Errno(c.errno.Load())))...).Inc()
	})
	return err
}

// CloseWrite shuts down the writing side of the wrapped conn (a TCP FIN, or a
// TLS close_notify), or reports errors.ErrUnsupported if it cannot.
func (c *Conn) CloseWrite() error {
	cw, ok := c.conn.(interface{ CloseWrite() error })
	if !ok {
		return errUnsupported(c.conn, "CloseWrite")
	}
	err := cw.CloseWrite()
	if err != nil {
		c.noteErr(err)
	}
	return err
}

// CloseRead shuts down the reading side of the wrapped conn, or reports
// errors.ErrUnsupported if it cannot (a *tls.Conn cannot).
func (c *Conn) CloseRead() error {
	cr, ok := c.conn.(interface{ CloseRead() error })
	if !ok {
		return errUnsupported(c.conn, "CloseRead")
	}
	return cr.CloseRead()
}

// Unwrap returns the wrapped conn, for its own methods (such as a *tls.Conn's
// ConnectionState). Bytes moved through it directly are not counted.
func (c *Conn) Unwrap() net.Conn { return c.conn }

// LocalAddr returns the wrapped conn's local address.
func (c *Conn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr returns the wrapped conn's remote address.
func (c *Conn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// SetDeadline sets the wrapped conn's read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// SetReadDeadline sets the wrapped conn's read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline sets the wrapped conn's write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// noteErr remembers err's OS error number if it has one and is the first.
func (c *Conn) noteErr(err error) {
	var errno syscall.Errno
	if errors.As(err, &errno) && errno != 0 {
		c.errno.CompareAndSwap(0, uintptr(errno))
	}
}

// readOnly hides every method of a Conn but Read, for the fallback copy.
type readOnly struct{ r io.Reader }

func (r readOnly) Read(p []byte) (int, error) { return r.r.Read(p) }

// writeOnly hides every method of a Conn but Write, for the fallback copy.
type writeOnly struct{ w io.Writer }

func (w writeOnly) Write(p []byte) (int, error) { return w.w.Write(p) }
