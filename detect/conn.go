package detect

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Conn is the connection Detect returns when it has something to replay: it
// reads the bytes peeked during detection first, then the read error that
// stopped detection (io.EOF for a client's half-close), and from then on
// reads the underlying connection directly. Everything else passes through
// to the underlying connection: Write, Close, addresses, deadlines, and
// CloseWrite/CloseRead when the underlying connection has them.
//
// Conn implements io.WriterTo and io.ReaderFrom so that io.Copy through it
// still reaches *net.TCPConn's splice path: WriteTo writes the replayed
// prefix and then hands the rest of the copy to the underlying connection.
//
// The peeked bytes live in a buffer borrowed from the Detector's pool; it is
// returned once the bytes have been replayed, or when the Conn is closed.
type Conn struct {
	net.Conn

	// replaying is true while pending or err remain to be read; once false
	// it stays false and reads go straight to the underlying connection
	// without taking mu.
	replaying atomic.Bool

	mu      sync.Mutex // guards the fields below
	buf     *[]byte    // pooled backing array of pending; nil once released
	pending []byte     // peeked bytes not yet read
	err     error      // read error seen while detecting, read after pending
	pool    *sync.Pool // where buf goes back to
}

var (
	_ io.WriterTo   = (*Conn)(nil)
	_ io.ReaderFrom = (*Conn)(nil)
)

// newConn returns a Conn replaying pending (backed by the pooled buf, which
// may be nil when pending is empty) and then err.
func newConn(c net.Conn, pool *sync.Pool, buf *[]byte, pending []byte, err error) *Conn {
	rc := &Conn{Conn: c, buf: buf, pending: pending, err: err, pool: pool}
	rc.replaying.Store(true)
	return rc
}

// Read reads the replayed bytes first, then the underlying connection.
func (c *Conn) Read(p []byte) (int, error) {
	if c.replaying.Load() {
		c.mu.Lock()
		if c.replaying.Load() {
			n, err := c.readReplayLocked(p)
			c.mu.Unlock()
			return n, err
		}
		c.mu.Unlock() // another reader finished the replay first
	}
	return c.Conn.Read(p)
}

// readReplayLocked reads from the replay state, which must not be finished.
// c.mu must be held.
func (c *Conn) readReplayLocked(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.releaseLocked()
			if c.err == nil {
				c.replaying.Store(false)
			}
		}
		return n, nil
	}
	err := c.err
	c.err = nil
	c.replaying.Store(false)
	return 0, err
}

// WriteTo writes the replayed bytes to w and then copies the underlying
// connection to w with io.Copy, which lets a *net.TCPConn splice. It returns
// at the replayed end of stream, or with the replayed read error.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	var written int64
	if c.replaying.Load() {
		n, stop, err := c.writeReplay(w)
		written += n
		if stop {
			return written, err
		}
	}
	n, err := io.Copy(w, c.Conn)
	return written + n, err
}

// writeReplay writes the replay state to w. stop reports that the copy ends
// here: a write failed, or the replayed read error ended the stream (err is
// nil for io.EOF).
func (c *Conn) writeReplay(w io.Writer) (written int64, stop bool, err error) {
	// mu is held across the write so that the buffer cannot go back to the
	// pool under it; Close does not wait for mu, so a stuck writer cannot
	// keep the connection from being closed.
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.replaying.Load() {
		return 0, false, nil
	}
	if len(c.pending) > 0 {
		n, err := w.Write(c.pending)
		c.pending = c.pending[n:]
		if err != nil {
			return int64(n), true, err
		}
		written = int64(n)
	}
	rerr := c.err
	c.err = nil
	c.releaseLocked()
	c.replaying.Store(false)
	if rerr == nil {
		return written, false, nil
	}
	if rerr == io.EOF {
		return written, true, nil
	}
	return written, true, rerr
}

// ReadFrom copies r to the underlying connection with io.Copy, so that a
// copy into a *net.TCPConn can still splice.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(c.Conn, r)
}

// Close closes the underlying connection and gives the buffer back to the
// pool unless a reader is using it right now (then the garbage collector
// takes it). Bytes not yet replayed are dropped: reads after Close fail as
// they would on the underlying connection.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.dropReplay()
	return err
}

// CloseWrite shuts down the writing side of the underlying connection (a
// half-close), if it supports that. Otherwise it returns an error that
// matches errors.ErrUnsupported.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("detect: %T cannot CloseWrite: %w", c.Conn, errors.ErrUnsupported)
}

// CloseRead shuts down the reading side of the underlying connection, if it
// supports that, dropping any bytes not yet replayed. Otherwise it returns
// an error that matches errors.ErrUnsupported.
func (c *Conn) CloseRead() error {
	cr, ok := c.Conn.(interface{ CloseRead() error })
	if !ok {
		return fmt.Errorf("detect: %T cannot CloseRead: %w", c.Conn, errors.ErrUnsupported)
	}
	err := cr.CloseRead()
	c.dropReplay()
	return err
}

// Unwrap returns the underlying connection, for callers that need its
// concrete type. Reading it directly skips the bytes that Buffered reports.
func (c *Conn) Unwrap() net.Conn { return c.Conn }

// Buffered returns how many peeked bytes have not been read yet.
func (c *Conn) Buffered() int {
	if !c.replaying.Load() {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// dropReplay discards the replay state and releases the buffer, unless a
// reader holds mu; it never blocks.
func (c *Conn) dropReplay() {
	if !c.replaying.Load() || !c.mu.TryLock() {
		return
	}
	defer c.mu.Unlock()
	c.pending, c.err = nil, nil
	c.releaseLocked()
	c.replaying.Store(false)
}

// releaseLocked gives the buffer back to the pool. c.mu must be held.
func (c *Conn) releaseLocked() {
	if c.buf != nil {
		c.pending = nil
		c.pool.Put(c.buf)
		c.buf = nil
	}
}
