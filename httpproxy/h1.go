package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// States of a relay connection, for Shutdown.
const (
	h1Idle     int32 = iota // waiting for a request: Shutdown closes it
	h1Busy                  // serving one: it ends after its answer
	h1Closed                // closed by Shutdown while idle
	h1Switched              // upgraded or tunnelled: not HTTP any more
)

// h1Conn is one client connection served by the HTTP/1 relay, on the
// goroutine that called ServeConn. Everything a request needs is kept here
// and reused, so that a keep-alive request allocates next to nothing.
type h1Conn struct {
	s     *Server
	ctx   context.Context
	conn  net.Conn
	info  *Conn
	br    *bufio.Reader
	bw    *bufio.Writer
	state atomic.Int32

	req, resp    h1Head
	reqTrailers  h1Head // written by the request body's goroutine
	respTrailers h1Head
	ex           exchange
	host         string // the last request's authority

	// Per request.
	hasBody  bool
	bodyDone chan error // the request body's goroutine; nil when none
	bodySent bool       // the whole request body went upstream
	sent100  bool
	// linger: the connection is closed after an answer while the client
	// may still be sending, so it is closed gently (closeWriteAndWait).
	linger bool

	// Between a body goroutine and the response read.
	deadlines   sync.Mutex
	headSeen    bool // the response head arrived
	bodyAborted bool // the body goroutine failed the response read

	// up is the upstream conn of the exchange in flight, closed with the
	// client's when ctx ends (a shutdown's grace period is over): a
	// request waiting for a slow upstream would otherwise hold the
	// shutdown until the upstream answered.
	up atomic.Pointer[UpstreamConn]
}

// serveH1 relays the HTTP/1 requests of conn until the client closes it,
// the relay closes it (idle, shut down, an exchange that leaves it
// unusable), or ctx is done.
func (s *Server) serveH1(ctx context.Context, conn net.Conn, info *Conn) {
	c := &h1Conn{s: s, ctx: ctx, conn: conn, info: info}
	defer conn.Close()
	if !s.h1.add(c) {
		return
	}
	defer s.h1.remove(c)
	stop := context.AfterFunc(ctx, func() {
		_ = conn.Close()
		if up := c.up.Load(); up != nil {
			_ = up.conn.Close()
		}
	})
	defer stop()
	c.br = s.reader(conn)
	c.bw = s.writer(conn)
	defer func() {
		s.readers.Put(c.br)
		s.writers.Put(c.bw)
	}()
	for first := true; c.readRequest(first) && c.serve(); first = false {
	}
	if c.linger {
		c.closeWriteAndWait()
	}
}

// lingerTime bounds closeWriteAndWait: net/http's rstAvoidanceDelay.
const lingerTime = 500 * time.Millisecond

// closeWriteAndWait ends the connection's sending side and reads what the
// client still sends, for a while, before the connection is closed: closing
// with unread input makes the kernel send a reset, which may reach the
// client before it has read the answer, and the answer is lost. It is
// net/http's closeWriteAndWait, which only sleeps; reading lets it end as
// soon as the client closes, and keeps a client that is still sending from
// blocking before it reads the answer. The time is bounded, so a client
// that keeps sending holds the goroutine half a second at most.
func (c *h1Conn) closeWriteAndWait() {
	if c.bw.Flush() != nil {
		return
	}
	if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.Copy(io.Discard, c.conn)
}

// readRequest waits for the next request and reads its head.
func (c *h1Conn) readRequest(first bool) bool {
	c.state.Store(h1Idle)
	if c.s.h1.closing.Load() {
		return false
	}
	// An idle connection keeps little of what a large message grew.
	c.req.shrink()
	c.resp.shrink()
	c.reqTrailers.shrink()
	c.respTrailers.shrink()
	// The first head has ReadHeaderTimeout from the connection's start, as
	// net/http's; a later one from its first byte, after an idle wait.
	headDeadline := time.Now().Add(c.s.cfg.ReadHeaderTimeout)
	if c.br.Buffered() == 0 {
		wait := headDeadline
		if !first {
			wait = time.Now().Add(c.s.cfg.IdleTimeout)
		}
		_ = c.conn.SetReadDeadline(wait)
		if _, err := c.br.Peek(1); err != nil {
			return false
		}
		if !first {
			headDeadline = time.Now().Add(c.s.cfg.ReadHeaderTimeout)
		}
	}
	if !c.state.CompareAndSwap(h1Idle, h1Busy) {
		return false
	}
	_ = c.conn.SetReadDeadline(headDeadline)
	err := c.req.read(c.br)
	if err == nil {
		err = c.req.parseRequest()
	}
	_ = c.conn.SetReadDeadline(time.Time{})
	if err != nil {
		c.refuseHead(err)
		return false
	}
	return true
}

// refuseHead answers a request head the relay will not forward, and the
// connection is closed after: where the next request starts is unknown.
// A client that left or stalled gets no answer.
func (c *h1Conn) refuseHead(err error) {
	var he *headError
	if !errors.As(err, &he) {
		return
	}
	reason := ReasonBadRequest
	if he.status == http.StatusRequestHeaderFieldsTooLarge {
		reason = ReasonHeadTooLarge
	}
	c.s.cfg.Metrics.proxyError(c.s.cfg.Direction, reason)
	c.s.logLimited(c.s.refusedLog, "request refused", reason, zap.Int("status", he.status), zap.Error(err))
	failure{he.status, grpcUnavailable, reason}.writeH1(c.bw, true)
	// The rest of the head, or a body, may be on its way.
	c.linger = true
}

// serve answers one request and counts it; it reports whether the
// connection can carry another.
func (c *h1Conn) serve() bool {
	info := c.info
	c.ex = exchange{start: time.Now()}
	req := &c.req
	c.hasBody = req.chunked || req.contentLength > 0
	c.bodyDone, c.bodySent, c.sent100 = nil, !c.hasBody, false
	c.headSeen, c.bodyAborted = false, false
	labels := info.Labels
	if info.Refuse == "" {
		// A refused client's Host names nothing it reached: it gets no
		// series of its own.
		labels.Authority = c.authority()
	}
	keep := false
	switch {
	case info.Refuse != "":
		// One answer is enough: a refused client does not get to hold
		// the connection.
		c.fail(refusal(info.Refuse), nil, true)
	case string(c.req.bytes(c.req.method)) == http.MethodConnect:
		c.connect()
	default:
		keep = c.forward()
	}
	if c.ex.serverID != "" {
		labels.ServerID = c.ex.serverID
	}
	c.s.cfg.Metrics.record(labels, &c.ex)
	// The answer's last bytes go out once it is counted, as net/http
	// flushes after the handler: a client that has its answer finds it
	// in the metrics.
	return c.bw.Flush() == nil && keep
}

// authority returns the request's authority, made a string only when it
// differs from the previous request's.
func (c *h1Conn) authority() string {
	if h := c.req.authority(); string(h) != c.host {
		c.host = string(h)
	}
	return c.host
}

// fail answers the request itself, counting and logging why.
func (c *h1Conn) fail(f failure, err error, closeConn bool) {
	c.s.cfg.Metrics.proxyError(c.s.cfg.Direction, f.reason)
	c.s.logLimited(c.s.failedLog, "request failed", f.reason,
		zap.String("method", string(c.req.bytes(c.req.method))), authorityField(string(c.req.authority())),
		zap.Int("status", f.status), zap.Error(err))
	c.ex.failed = true
	if f.reason == ReasonCanceled {
		// Nobody is listening any more.
		c.ex.status = 0
		return
	}
	c.ex.status = f.writeH1(c.bw, closeConn || c.s.h1.closing.Load())
	c.ex.headersAt = time.Now()
	// A body the relay did not read, or requests sent after this one, may
	// still be arriving when the connection is closed.
	c.linger = c.linger || closeConn && (!c.bodySent || c.br.Buffered() > 0)
}

// h1Conns are the relay's connections, for Shutdown.
type h1Conns struct {
	closing atomic.Bool
	mu      sync.Mutex
	conns   map[*h1Conn]struct{}
}

func (cs *h1Conns) add(c *h1Conn) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closing.Load() {
		return false
	}
	if cs.conns == nil {
		cs.conns = map[*h1Conn]struct{}{}
	}
	cs.conns[c] = struct{}{}
	return true
}

func (cs *h1Conns) remove(c *h1Conn) {
	cs.mu.Lock()
	delete(cs.conns, c)
	cs.mu.Unlock()
}

// shutdown stops taking connections, closes the idle ones and waits until
// the busy ones have answered their request in flight (with Connection:
// close) and ended, or ctx is done. Switched connections are not waited
// for, as net/http does not wait for hijacked ones.
func (cs *h1Conns) shutdown(ctx context.Context) error {
	cs.closing.Store(true)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		busy := 0
		cs.mu.Lock()
		for c := range cs.conns {
			switch {
			case c.state.CompareAndSwap(h1Idle, h1Closed):
				_ = c.conn.Close()
			case c.state.Load() == h1Busy:
				busy++
			}
		}
		cs.mu.Unlock()
		if busy == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
