// Package duplex joins two connections, copying bytes both ways until both
// directions are done: the last step of both the inbound and the outbound data
// path.
//
// Each direction ends on its own. When one side's stream ends (EOF), Join
// passes the end on with CloseWrite on the other conn (a TCP FIN, or a TLS
// close_notify), and the reverse direction keeps flowing: request/response
// protocols that half-close after the request keep working through the proxy.
// When a direction fails instead (a reset, a broken pipe), Join closes both
// conns at once, so that neither peer waits on a connection that is already
// dead. Plain TCP to TCP is copied with splice(2) through io.Copy; any other
// pair (a TLS leg) through pooled buffers.
package duplex

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// ErrHalfCloseTimeout is returned by Join when one direction had ended and
// the other was cut off after Options.HalfCloseTimeout.
var ErrHalfCloseTimeout = errors.New("duplex: half-close timeout")

// Options configures Join. The zero value is usable: no half-close limit and
// unpooled buffers.
type Options struct {
	// HalfCloseTimeout bounds how long one direction may keep flowing after
	// the other has ended. Zero means no limit, which suits protocols that
	// legitimately half-close for long; a positive value protects against
	// peers that never close their side, at the cost of cutting such
	// protocols off (Join then returns ErrHalfCloseTimeout).
	HalfCloseTimeout time.Duration
	// Pool supplies the copy buffers for directions that cannot splice.
	// Nil allocates a buffer per direction.
	Pool *BufferPool
}

// Stats counts the bytes Join delivered in each direction.
type Stats struct {
	// AToB is the number of bytes read from a and written to b.
	AToB int64
	// BToA is the number of bytes read from b and written to a.
	BToA int64
}

// Join copies a to b and b to a concurrently and returns when both directions
// have ended, having closed both conns. It returns the bytes copied each way
// and the first error that ended the join: a copy error (wrapped, naming the
// direction), ctx's error if ctx was done first, or ErrHalfCloseTimeout. A
// join in which both sides ended their streams cleanly returns a nil error.
//
// TLS conns must have completed their handshake, or their CloseWrite fails.
// A conn without CloseWrite cannot half-close: its peer sees the end of the
// stream only when the other direction ends too and Join closes both.
func Join(ctx context.Context, a, b net.Conn, opt Options) (Stats, error) {
	j := &joiner{a: a, b: b, halfCloseTimeout: opt.HalfCloseTimeout, running: 2}
	stop := context.AfterFunc(ctx, func() { j.abort(ctx.Err()) })
	defer stop()

	var st Stats
	bToA := make(chan struct{})
	go func() {
		defer close(bToA)
		var err error
		st.BToA, err = copyOne(a, b, opt.Pool)
		j.finish(a, err, "b to a")
	}()
	var err error
	st.AToB, err = copyOne(b, a, opt.Pool)
	j.finish(b, err, "a to b")
	<-bToA

	j.closeBoth()
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.timer != nil {
		j.timer.Stop()
	}
	return st, j.err
}

// joiner is the state shared by the two directions of one Join.
type joiner struct {
	a, b             net.Conn
	halfCloseTimeout time.Duration
	closeOnce        sync.Once

	mu      sync.Mutex
	running int         // directions still copying
	err     error       // why the join was cut short; set once
	timer   *time.Timer // the half-close limit, once started
}

// finish ends one direction whose copy into dst returned err.
func (j *joiner) finish(dst net.Conn, err error, dir string) {
	if err == nil {
		if err = closeWrite(dst); err != nil {
			err = fmt.Errorf("close write: %w", err)
		}
	}
	j.mu.Lock()
	j.running--
	cut := err != nil && j.err == nil
	if cut {
		j.err = fmt.Errorf("duplex: %s: %w", dir, err)
	} else if err == nil && j.err == nil && j.running == 1 && j.halfCloseTimeout > 0 {
		j.timer = time.AfterFunc(j.halfCloseTimeout, func() { j.abort(ErrHalfCloseTimeout) })
	}
	j.mu.Unlock()
	// An error after the join was cut short is a consequence of closing the
	// conns, not news; only the first one is reported.
	if cut {
		j.closeBoth()
	}
}

// abort cuts the join short for cause, unless it is already over.
func (j *joiner) abort(cause error) {
	j.mu.Lock()
	cut := j.running > 0 && j.err == nil
	if cut {
		j.err = cause
	}
	j.mu.Unlock()
	if cut {
		j.closeBoth()
	}
}

// closeBoth closes both conns, unblocking any copy still running. Close
// errors are of no interest here: the conns are done either way.
func (j *joiner) closeBoth() {
	j.closeOnce.Do(func() {
		_ = j.a.Close()
		_ = j.b.Close()
	})
}
