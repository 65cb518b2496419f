package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// Upstream lends the HTTP/1 relay a connection for each request.
type Upstream interface {
	// Conn returns a connection for one request, idle or new, and the
	// request's Lease when the upstream wants to know how it went (a
	// balanced endpoint), else nil. hasBody tells whether the request
	// carries a body, which could not be sent again.
	Conn(ctx context.Context, hasBody bool) (*UpstreamConn, Lease, error)
}

// Lease is one request's hold on the upstream it was sent to.
type Lease interface {
	// Responded is called when the response's head arrived.
	Responded()
	// Done is called once the exchange is over: the response body ended,
	// the protocol switched, or the request failed.
	Done()
}

// UpstreamConn is a pooled HTTP/1 connection to an upstream.
type UpstreamConn struct {
	conn   net.Conn
	br     *bufio.Reader
	pool   *connPool
	peerID string
	idleAt time.Time
	reused bool

	// For the check an idle conn gets before reuse; peek is made once
	// per conn, as a RawConn callback made per call would allocate.
	raw     syscall.RawConn
	peek    func(fd uintptr) bool
	closed  bool // what the last peek saw
	peekBuf [1]byte
}

// release returns c to its pool when reusable, else closes it.
func (c *UpstreamConn) release(reusable bool) {
	if !reusable || c.br.Buffered() > 0 {
		_ = c.conn.Close()
		return
	}
	c.pool.put(c)
}

// connPool is the HTTP/1 relay's pool of connections to one upstream: a
// LIFO stack of idle conns (the most recently used is the most likely to
// be alive and warm), at most maxIdle, each closed after idleTimeout by one
// timer per pool.
type connPool struct {
	dial            func(ctx context.Context) (net.Conn, error)
	maxIdle         int
	idleTimeout     time.Duration
	responseTimeout time.Duration

	mu    sync.Mutex
	idle  []*UpstreamConn // oldest first
	timer *time.Timer
	armed bool
	dialBackoff
}

// newConnPool makes the relay's pool for the upstream t is configured for:
// its dial function, idle and response timeouts and idle limit, so one
// TransportConfig serves both the relay and net/http's HTTP/2 path.
func newConnPool(t *http.Transport) *connPool {
	p := &connPool{
		maxIdle:         t.MaxIdleConnsPerHost,
		idleTimeout:     t.IdleConnTimeout,
		responseTimeout: t.ResponseHeaderTimeout,
		dialBackoff:     newDialBackoff(),
		dial: func(ctx context.Context) (net.Conn, error) {
			if t.DialContext == nil {
				return nil, errors.New("no dial function")
			}
			return t.DialContext(ctx, "tcp", "")
		},
	}
	if p.maxIdle <= 0 {
		p.maxIdle = http.DefaultMaxIdleConnsPerHost
	}
	if p.idleTimeout <= 0 {
		p.idleTimeout = 90 * time.Second
	}
	return p
}

// get returns an idle conn that is still open, or a new one. After a
// failed connect it dials again only once the backoff is over: until then
// a request that needs a new conn fails at once with ErrDialBackoff,
// wrapping the connect's error.
func (p *connPool) get(ctx context.Context) (*UpstreamConn, error) {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			err := p.blocked(time.Now())
			p.mu.Unlock()
			if err != nil {
				return nil, err
			}
			break
		}
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if c.open() {
			c.reused = true
			return c, nil
		}
		_ = c.conn.Close()
	}
	conn, err := p.dial(ctx)
	p.dialed(ctx, err)
	if err != nil {
		return nil, err
	}
	c := &UpstreamConn{conn: conn, br: bufio.NewReader(conn), pool: p, peerID: PeerID(conn), raw: rawConn(conn)}
	c.peek = c.peekClosed
	return c, nil
}

// dialed tells the backoff how a connect went. One the request gave up on
// (ctx done) says nothing of the upstream.
func (p *connPool) dialed(ctx context.Context, err error) {
	if err != nil && ctx.Err() != nil {
		return
	}
	p.mu.Lock()
	if err != nil {
		p.failed(err, time.Now())
	} else {
		p.connected()
	}
	p.mu.Unlock()
}

func (p *connPool) put(c *UpstreamConn) {
	c.idleAt = time.Now()
	p.mu.Lock()
	if len(p.idle) >= p.maxIdle {
		p.mu.Unlock()
		_ = c.conn.Close()
		return
	}
	p.idle = append(p.idle, c)
	if !p.armed {
		p.armed = true
		if p.timer == nil {
			p.timer = time.AfterFunc(p.idleTimeout, p.sweep)
		} else {
			p.timer.Reset(p.idleTimeout)
		}
	}
	p.mu.Unlock()
}

// sweep closes the conns idle for idleTimeout and sets the timer for the
// next one.
func (p *connPool) sweep() {
	now := time.Now()
	p.mu.Lock()
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].idleAt) >= p.idleTimeout {
		n++
	}
	expired := append([]*UpstreamConn(nil), p.idle[:n]...)
	p.idle = append(p.idle[:0], p.idle[n:]...)
	if len(p.idle) > 0 {
		p.timer.Reset(p.idle[0].idleAt.Add(p.idleTimeout).Sub(now))
	} else {
		p.armed = false
	}
	p.mu.Unlock()
	for _, c := range expired {
		_ = c.conn.Close()
	}
}

// closeIdle closes every idle conn.
func (p *connPool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	if p.timer != nil {
		p.timer.Stop()
	}
	p.armed = false
	p.mu.Unlock()
	for _, c := range idle {
		_ = c.conn.Close()
	}
}

// idleLen returns the number of idle conns.
func (p *connPool) idleLen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// open reports whether an idle conn can still be used: nothing arrived on
// it while idle, not even the end of the stream. Without this, a conn the
// upstream closed while pooled would be found out by a failed request (the
// net/http Transport learns it from the read loop it runs per conn).
func (c *UpstreamConn) open() bool {
	if c.raw == nil {
		return true
	}
	c.closed = false
	if err := c.raw.Read(c.peek); err != nil {
		return false
	}
	return !c.closed
}

// rawConn returns the socket under c's wrappers and TLS, or nil.
func rawConn(c net.Conn) syscall.RawConn {
	for c != nil {
		switch v := c.(type) {
		case syscall.Conn:
			rc, err := v.SyscallConn()
			if err != nil {
				return nil
			}
			return rc
		case interface{ Unwrap() net.Conn }:
			c = v.Unwrap()
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}
