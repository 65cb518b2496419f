package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
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
	c.reused = true
	c.pool.put(c)
}

// A pool's dials under way start bounded at minDialing. A conn is busy
// for one exchange at a time, so a burst of requests finds every conn
// busy; when each request dialed its own, the handshakes (about 1.3 ms of
// CPU for the pair, resumed) slowed every exchange enough to need more
// conns still. A hiccup of a few milliseconds at 1000 requests/s through
// the pair on two cores became ~50 connects in 100 ms, each taking
// 15-50 ms, and the requests behind them waited up to 150 ms. The bound
// grows by one for each new conn a request was waiting for, as TCP's slow
// start grows its window, so it doubles per connect time while only new
// conns serve the line (requests that hold their conns long, a far peer),
// up to maxDialing. It is back at minDialing, and stays there, while conns
// given back serve the line between new ones (a burst of short exchanges),
// and once a new conn finds nobody waiting.
const (
	minDialing = 4
	maxDialing = 64 // outbound's handshake slots per destination
)

// connPool is the HTTP/1 relay's pool of connections to one upstream: a
// LIFO stack of idle conns (the most recently used is the most likely to
// be alive and warm), at most maxIdle, each closed after idleTimeout by one
// timer per pool.
//
// A request that finds no idle conn waits in line for whichever comes
// first: a conn another request gives back, or a new one. Dials start
// while the line is longer than the dials under way, at most dialLimit at
// once (see minDialing): a dial whose request was served by a conn given
// back goes on for the next in line.
type connPool struct {
	dial            func(ctx context.Context) (net.Conn, error)
	maxIdle         int
	idleTimeout     time.Duration
	responseTimeout time.Duration

	mu      sync.Mutex
	idle    []*UpstreamConn // oldest first
	waiting []*connWaiter   // first come, first served
	dialing int             // dials under way
	// dialGrowth is what dialLimit adds to minDialing while the line
	// lasts and only new conns serve it; givenBack says a conn given back
	// served the line since the last new one.
	dialGrowth int
	givenBack  bool
	dials      dialScope
	timer      *time.Timer
	armed      bool
	dialBackoff
}

// connWaiter is a request waiting for a conn.
type connWaiter struct {
	ready chan connResult // buffered: whoever serves the waiter never blocks
}

type connResult struct {
	c   *UpstreamConn
	err error
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

// get returns an idle conn that is still open, or else the first conn
// given back or dialed while it waits. After a failed connect it dials
// again only once the backoff is over: until then a request that needs a
// new conn fails at once with ErrDialBackoff, wrapping the connect's error.
func (p *connPool) get(ctx context.Context) (*UpstreamConn, error) {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			break // still locked
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
	if err := p.blocked(time.Now()); err != nil {
		p.mu.Unlock()
		return nil, err
	}
	w := &connWaiter{ready: make(chan connResult, 1)}
	p.waiting = append(p.waiting, w)
	p.dialMore()
	p.mu.Unlock()
	select {
	case r := <-w.ready:
		return r.c, r.err
	case <-ctx.Done():
		p.mu.Lock()
		i := slices.Index(p.waiting, w)
		if i >= 0 {
			p.waiting = slices.Delete(p.waiting, i, i+1)
		}
		p.mu.Unlock()
		if i < 0 { // served meanwhile: pass the conn on
			if r := <-w.ready; r.c != nil {
				p.put(r.c)
			}
		}
		return nil, ctx.Err()
	}
}

// dialLimit bounds the dials under way (see minDialing). p.mu must be held.
func (p *connPool) dialLimit() int { return minDialing + p.dialGrowth }

// dialMore starts dials while the line is longer than the dials under
// way, at most dialLimit at once. p.mu must be held.
func (p *connPool) dialMore() {
	for p.dialing < len(p.waiting) && p.dialing < p.dialLimit() {
		p.dialing++
		go p.dialOne(p.dials.context())
	}
}

// dialOne dials a conn for the pool. The conn goes to the first request
// in line or to the idle stack. A failure goes to the first request in
// line when there are more requests waiting than dials still under way,
// as a request's own failed connect did; the others keep waiting, for
// another dial if the backoff allows one, else failing as new requests
// would.
//
// The dial outlives the request it started for, bounded by the dial
// function's own timeout: others may wait for it, and a conn that comes
// after they left fills the pool. closeIdle ends it (ctx): one ended so
// says nothing of the upstream, and its conn, if it came anyway with
// nobody waiting, is closed.
func (p *connPool) dialOne(ctx context.Context) {
	conn, err := p.dial(ctx)
	if err != nil {
		p.mu.Lock()
		p.dialing--
		if ctx.Err() == nil {
			p.failed(err, time.Now())
		}
		var failed *connWaiter
		if len(p.waiting) > p.dialing {
			failed = p.popWaiter()
		}
		if berr := p.blocked(time.Now()); berr != nil {
			// Backoff: the rest fail as new requests would now.
			rest := p.waiting
			p.waiting = nil
			p.mu.Unlock()
			for _, w := range rest {
				w.ready <- connResult{err: berr}
			}
		} else {
			p.dialMore()
			p.mu.Unlock()
		}
		if failed != nil {
			failed.ready <- connResult{err: err}
		}
		return
	}
	c := &UpstreamConn{conn: conn, br: bufio.NewReader(conn), pool: p, peerID: PeerID(conn), raw: rawConn(conn)}
	c.peek = c.peekClosed
	p.mu.Lock()
	p.dialing--
	p.connected()
	if len(p.waiting) > 0 {
		w := p.popWaiter()
		if !p.givenBack {
			p.dialGrowth = min(p.dialGrowth+1, maxDialing-minDialing)
		}
		p.givenBack = false
		p.dialMore()
		p.mu.Unlock()
		w.ready <- connResult{c: c}
		return
	}
	p.dialGrowth = 0 // nobody waited for it: the burst is over
	if ctx.Err() != nil {
		p.mu.Unlock()
		_ = conn.Close()
		return
	}
	p.putAndUnlock(c)
}

// popWaiter takes the first request out of the line. p.mu must be held
// and the line not empty.
func (p *connPool) popWaiter() *connWaiter {
	w := p.waiting[0]
	p.waiting[0] = nil
	p.waiting = p.waiting[1:]
	return w
}

// put gives c to the first request waiting for a conn, or else to the
// idle stack.
func (p *connPool) put(c *UpstreamConn) {
	p.mu.Lock()
	p.putAndUnlock(c)
}

// putAndUnlock is put with p.mu held, which it unlocks.
func (p *connPool) putAndUnlock(c *UpstreamConn) {
	c.idleAt = time.Now()
	if len(p.waiting) > 0 {
		w := p.popWaiter()
		// Conns come back: the line is a burst of short exchanges, which
		// more connects would only slow down (see minDialing).
		p.dialGrowth, p.givenBack = 0, true
		p.mu.Unlock()
		w.ready <- connResult{c: c}
		return
	}
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

// closeIdle closes every idle conn, and ends the dials under way.
func (p *connPool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.dials.end() // under p.mu: a dial sees it ended, or its conn is in p.idle
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
