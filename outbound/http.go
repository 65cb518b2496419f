package outbound

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/balance"
	"github.com/seed722d2a70/meshproxy/detect"
	"github.com/seed722d2a70/meshproxy/httpproxy"
	"github.com/seed722d2a70/meshproxy/identity"
	"github.com/seed722d2a70/meshproxy/internal/header"
	"github.com/seed722d2a70/meshproxy/metrics"
)

// serveHTTP serves a connection detected as HTTP/1 or prior-knowledge
// HTTP/2 request by request. Requests go to the destination with the
// protocol the client spoke: to a meshed peer over pooled mTLS connections
// whose transport header announces that protocol, so the peer's inbound
// serves them as HTTP too; to an unmeshed destination directly, still
// counted.
func (p *Proxy) serveHTTP(ctx context.Context, conn net.Conn, route Route, proto detect.Protocol) {
	session := header.HTTP1
	if proto == detect.HTTP2 {
		session = header.HTTP2
	}
	tlsLabel := metrics.TLSNoIdentity
	if route.Meshed {
		tlsLabel = metrics.TLSTrue
	}
	c := &httpproxy.Conn{
		Protocol: session,
		Upstream: route.Target.String(),
		Labels:   httpproxy.Labels{Direction: metrics.DirectionOutbound, TLS: tlsLabel, TargetAddr: route.DialAddr, Dst: route.dst()},
		// A CONNECT tunnel is opaque bytes after the answer: it goes
		// with no session protocol, like any opaque connection.
		Tunnel: func(ctx context.Context) (net.Conn, error) { return p.dialUpstream(ctx, route, header.None) },
	}
	if route.Endpoints != nil {
		// Each request chooses its endpoint: one long-lived client
		// connection (gRPC's) is spread over every replica.
		bt := &balancedTransport{p: p, route: route, session: session}
		c.Transport, c.H1 = bt, bt
		if p.cfg.HTTP2Relay {
			c.H2 = bt
		}
		c.Labels.TargetAddr = route.Target.String()
		if route.Endpoints.allMeshed() {
			c.Labels.TLS = metrics.TLSTrue
		}
	} else {
		pool := p.upstreams.get(p, route, session)
		c.Transport, c.H1 = pool, pool
		if session == header.HTTP2 && p.cfg.HTTP2Relay {
			c.H2 = pool.H2()
		}
	}
	p.http.ServeConn(ctx, conn, c)
}

// balancedTransport sends each request to an endpoint the balancer
// chooses, over that endpoint's pool, and moves on to another endpoint when
// one fails to connect, for requests that can be sent again.
type balancedTransport struct {
	p       *Proxy
	route   Route
	session header.SessionProtocol
}

func (t *balancedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	var resp *http.Response
	hasBody := r.Body != nil && r.Body != http.NoBody
	h, start, err := t.try(hasBody, func(pool *httpproxy.Pool) (err error) {
		resp, err = pool.RoundTrip(r)
		return err
	})
	if err != nil {
		return nil, err
	}
	h.Observe(time.Since(start))
	// The request is the endpoint's work until its response ends: a
	// stream (gRPC's) weighs on it while it lasts. An upgraded
	// connection's body must stay a ReadWriteCloser.
	if resp.StatusCode == http.StatusSwitchingProtocols {
		h.Done()
	} else {
		resp.Body = &doneBody{ReadCloser: resp.Body, done: h.Done}
	}
	return resp, nil
}

// Conn gives the HTTP/1 relay a connection to the endpoint chosen for one
// request, and the lease through which it tells the balancer how the
// request went.
func (t *balancedTransport) Conn(ctx context.Context, hasBody bool) (*httpproxy.UpstreamConn, httpproxy.Lease, error) {
	var conn *httpproxy.UpstreamConn
	h, start, err := t.try(hasBody, func(pool *httpproxy.Pool) (err error) {
		conn, _, err = pool.Conn(ctx, hasBody)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return conn, &endpointLease{h: h, start: start}, nil
}

// try sends a request with send through the pool of an endpoint the
// balancer chooses, moving on to another when one fails to connect and the
// request has no body (nothing was sent on a failed connect, but the body
// may have been read for it). It returns the chosen endpoint's handle and
// when its attempt started.
func (t *balancedTransport) try(hasBody bool, send func(*httpproxy.Pool) error) (*balance.Handle, time.Time, error) {
	skip := map[string]bool{}
	err := fmt.Errorf("%s: %w", t.route.Target, ErrNoEndpoints)
	for range maxEndpointAttempts {
		h, ep, ok := t.route.Endpoints.pick(skip)
		if !ok {
			break
		}
		er, rerr := t.p.endpointRoute(t.route, ep, false)
		if rerr != nil {
			h.Done()
			return nil, time.Time{}, rerr
		}
		// A request that waited for a new connection's handshake is
		// observed too: the balancer raises an estimate at most twofold per
		// observation, and counts estimates within fourfold as equal, so
		// one handshake does not idle an endpoint.
		start := time.Now()
		sendErr := send(t.p.upstreams.get(t.p, er, t.session))
		if sendErr == nil {
			t.p.cfg.Metrics.endpointChoice(true)
			return h, start, nil
		}
		h.Done()
		var de *dialError
		if !errors.As(sendErr, &de) || localQueueError(sendErr) {
			return nil, time.Time{}, sendErr
		}
		h.Fail()
		t.p.cfg.Metrics.endpointChoice(false)
		skip[h.ID()] = true
		err = sendErr
		if hasBody {
			break
		}
	}
	return nil, time.Time{}, err
}

// endpointLease is a relayed HTTP/1 request's hold on its endpoint: its
// latency is observed at the response head, and it weighs on the endpoint
// until its response ends.
type endpointLease struct {
	h     *balance.Handle
	start time.Time
}

func (l *endpointLease) Responded() { l.h.Observe(time.Since(l.start)) }
func (l *endpointLease) Done()      { l.h.Done() }

// doneBody calls done once, when the body is read to its end (or fails) or
// closed.
type doneBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *doneBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.once.Do(b.done)
	}
	return n, err
}

func (b *doneBody) Close() error {
	b.once.Do(b.done)
	return b.ReadCloser.Close()
}

// dialError marks a failure to connect (or handshake), before any of a
// request was sent.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// dialUpstream opens one upstream connection for HTTP, counted in the
// tcp_* metrics and labelled with the peer's identity. Refusals by
// authorization, either side's, are marked so the client gets 403.
func (p *Proxy) dialUpstream(ctx context.Context, route Route, session header.SessionProtocol) (net.Conn, error) {
	var (
		conn     net.Conn
		serverID string
		err      error
	)
	if route.Endpoints != nil {
		conn, serverID, route, err = p.dialBalanced(ctx, route) // a CONNECT tunnel
	} else {
		conn, serverID, err = p.dialSession(ctx, route, session)
	}
	if err != nil {
		p.cfg.Metrics.connectError(err)
		p.log.Info("connecting to destination failed", zap.Stringer("target", route.Target),
			zap.String("dial_addr", route.DialAddr), zap.Error(err))
		var alert tls.AlertError
		if errors.Is(err, identity.ErrUnauthorized) || errors.As(err, &alert) {
			err = fmt.Errorf("%w: %w", httpproxy.ErrRefused, err)
		}
		return nil, &dialError{err}
	}
	tlsLabel := metrics.TLSDisabled
	if route.Meshed {
		tlsLabel = metrics.TLSTrue
	}
	conn = p.cfg.Transport.Track(conn, metrics.Labels{
		Direction: metrics.DirectionOutbound, Peer: metrics.PeerDst, TLS: tlsLabel, ServerID: serverID, TargetAddr: route.DialAddr, Dst: route.dst(),
	})
	return httpproxy.WithPeerID(conn, serverID), nil
}

// upstreamKey identifies a pool of upstream HTTP connections: everything a
// connection was made for. The TLS configuration carries the identities
// the peer may present, so a table reload that changes them starts a new
// pool.
type upstreamKey struct {
	dialAddr string
	port     uint16
	meshed   bool
	session  header.SessionProtocol
	tls      *tls.Config
	// dst keeps the connections of a pod behind two Services apart, so
	// each is counted under its own dst_service.
	dst metrics.Dst
}

// upstreams are the pools of HTTP connections to destinations, shared by
// every client connection to the same destination. A table reload that
// changes a destination's TLS configuration starts a new pool; the old one
// is dropped once unused.
type upstreams struct {
	cfg httpproxy.TransportConfig // the Dial and Protocol are per pool
	httpproxy.Pools[upstreamKey]
}

func (u *upstreams) get(p *Proxy, route Route, session header.SessionProtocol) *httpproxy.Pool {
	key := upstreamKey{route.DialAddr, route.Target.Port, route.Meshed, session, route.TLS, route.dst()}
	return u.Get(key, time.Now(), func() *http.Transport {
		cfg := u.cfg
		cfg.Protocol = session
		cfg.Dial = func(ctx context.Context) (net.Conn, error) { return p.dialUpstream(ctx, route, session) }
		return httpproxy.NewTransport(cfg)
	})
}
