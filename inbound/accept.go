// Package inbound is the proxy in front of the local workload. It accepts
// mesh connections on the inbound port (4143), proves who the peer is with
// mutual TLS, reads the transport header naming the workload port, checks
// the port's policy, and forwards to the workload on that port. It forwards
// only to the local workload: the peer chooses a port, never an address.
//
// A connection's path, one file per step: accept.go (listener, handle) →
// redirect.go (transparent mode: connections redirected from app ports) →
// tls.go (handshake, identity) → direct.go (transport header) → policy.go
// and prevent_loop.go (may this peer reach this port?) → forward.go (dial
// the workload, copy both ways). A connection whose header announces HTTP
// goes to http.go instead, served request by request.
package inbound

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/detect"
	"github.com/seed722d2a70/meshproxy/httpproxy"
	"github.com/seed722d2a70/meshproxy/internal/duplex"
	"github.com/seed722d2a70/meshproxy/internal/header"
	"github.com/seed722d2a70/meshproxy/internal/ratelog"
	"github.com/seed722d2a70/meshproxy/internal/serve"
	"github.com/seed722d2a70/meshproxy/metrics"
	"github.com/seed722d2a70/meshproxy/ports"
)

// Config configures an inbound proxy. TLS and Policy are required.
type Config struct {
	// TLS is the server configuration: TLS 1.3, client certificates
	// required and verified against the trust bundle. The proxy adds the
	// transport header's ALPN protocol.
	TLS    *tls.Config
	Policy *Policy
	// WorkloadHost is the workload's address (normally 127.0.0.1).
	WorkloadHost string
	// HandshakeTimeout and HeaderTimeout bound what an unauthenticated or
	// slow peer can hold: the handshake, then the header read.
	HandshakeTimeout time.Duration
	HeaderTimeout    time.Duration
	// MaxPending and MaxPendingPerSource cap the connections whose peer
	// has not yet authenticated, in total and per source (pending.go),
	// and an eighth of them those verified but without a header yet; 0
	// means config.DefaultMaxPending and config.DefaultMaxPendingPerSource
	// (at most MaxPending).
	MaxPending          int
	MaxPendingPerSource int
	// MaxHandshakeBytes is what a peer may send before its handshake
	// completes; 0 means config.DefaultMaxHandshakeBytes.
	MaxHandshakeBytes int
	// MaxUnmeshedHTTP and MaxUnmeshedHTTPPerSource cap the unmeshed
	// clients' HTTP connections the proxy serves itself (transparent
	// mode), in total and per source; 0 means the config defaults.
	MaxUnmeshedHTTP          int
	MaxUnmeshedHTTPPerSource int
	// Accept counts the accept loop's failures; nil counts nothing.
	Accept *serve.Metrics
	// DialTimeout bounds connecting to the workload.
	DialTimeout time.Duration
	Copy        duplex.Options
	Metrics     *Metrics
	Transport   *metrics.Transport
	Log         *zap.Logger
	// HTTP counts the request metrics of HTTP sessions; nil counts
	// nothing.
	HTTP *httpproxy.Metrics
	// HTTP2Relay serves HTTP/2 sessions with httpproxy's frame relay
	// (the default); false puts them on net/http (config.Config.HTTP2Relay).
	HTTP2Relay bool

	// Transparent says the firewall (meshproxy init) redirects connections
	// for app ports to the inbound listener: a connection whose original
	// destination is not the listener's port is then handled as addressed
	// to that app port (redirect.go).
	Transparent bool
	// Detector tells, on a redirected connection, a peer proxy's mTLS from
	// an unmeshed client's bytes; nil uses a default one.
	Detector *detect.Detector
	// OpaquePorts are the mesh's opaque ports. Peers send opaque traffic to
	// the inbound port, never to the app port, so a connection redirected
	// from one of them (or from a port whose policy hint is opaque or TLS)
	// is an unmeshed client's and is not sniffed: a server-first protocol
	// gets no detection stall.
	OpaquePorts ports.Set
}

// Proxy is an inbound proxy. Create one with New, serve with Serve, stop
// with Shutdown.
type Proxy struct {
	cfg     Config
	tls     *tls.Config
	dialer  net.Dialer
	srv     *serve.Server
	pending *pendingLimiter
	// refusals limits refusal log lines to one a second per reason: a
	// flood of bad peers would otherwise cost a line per connection. The
	// metrics keep the exact count.
	refusals  *ratelog.Keyed
	http      *httpproxy.Server
	workloads workloads
	log       *zap.Logger
}

// New returns an inbound proxy.
func New(cfg Config) *Proxy {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	for _, d := range []*time.Duration{&cfg.HandshakeTimeout, &cfg.HeaderTimeout, &cfg.DialTimeout} {
		if *d <= 0 {
			*d = 10 * time.Second
		}
	}
	if cfg.WorkloadHost == "" {
		cfg.WorkloadHost = "127.0.0.1"
	}
	if cfg.MaxHandshakeBytes <= 0 {
		cfg.MaxHandshakeBytes = config.DefaultMaxHandshakeBytes
	}
	if cfg.Detector == nil {
		cfg.Detector = detect.New(detect.Config{Direction: detect.Inbound, Logger: cfg.Log})
	}
	log := cfg.Log.With(zap.String("direction", "inbound"))
	pending := newPendingLimiter(limits{
		maxPending: cfg.MaxPending, perSource: cfg.MaxPendingPerSource,
		maxUnmeshedHTTP: cfg.MaxUnmeshedHTTP, unmeshedHTTPPerSource: cfg.MaxUnmeshedHTTPPerSource,
	}, cfg.Metrics, log)
	return &Proxy{
		cfg:      cfg,
		tls:      serverTLS(cfg.TLS),
		pending:  pending,
		refusals: ratelog.NewKeyed(time.Second),
		srv: serve.New(serve.Config{
			Log: log, Direction: "inbound", Metrics: cfg.Accept, Admit: pending.admit,
			OnShed: func() { cfg.Metrics.connectionShed("fd_limit") },
		}),
		http: httpproxy.New(httpproxy.Config{
			Direction: metrics.DirectionInbound, Copy: cfg.Copy, Metrics: cfg.HTTP, Log: log,
		}),
		log: log,
	}
}

// Serve accepts mesh connections on ln until Shutdown.
func (p *Proxy) Serve(ln net.Listener) error { return p.srv.Serve(ln, p.handle) }

// Starved reports whether the accept loop is failing for want of file
// descriptors; see serve.Server.Starved.
func (p *Proxy) Starved() bool { return p.srv.Starved() }

// Shutdown stops accepting and waits for connections to finish until ctx is
// done, then closes them. HTTP peers are asked to close (Connection: close,
// GOAWAY) as soon as their requests in flight are answered.
func (p *Proxy) Shutdown(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { _ = p.http.Shutdown(ctx) })
	err := p.srv.Shutdown(ctx)
	wg.Wait()
	p.workloads.CloseIdle()
	return err
}

// handle carries one connection to the workload: a mesh connection
// addressed to the inbound port, or in transparent mode one redirected from
// an app port. conn comes pending (pending.go) from the accept loop.
func (p *Proxy) handle(ctx context.Context, conn net.Conn) {
	pc, _ := conn.(*pendingConn)
	if pc != nil {
		defer pc.release()
		conn = pc.Conn
	}
	// Lazily: most refused connections are never logged, and a logger's
	// fields cost a buffer per connection (a silent flood's memory).
	log := p.log.WithLazy(zap.Stringer("client", conn.RemoteAddr()))
	if p.cfg.Transparent {
		dst, redirected, err := p.redirectedFrom(conn)
		if err != nil {
			p.refuse(log, conn, err)
			return
		}
		if redirected {
			p.handleRedirected(ctx, log, pc, conn, dst)
			return
		}
	}
	p.handleMesh(ctx, log, pc, conn, 0, conn.LocalAddr().String())
}

// handleMesh carries a mesh connection: mTLS, then the transport header
// naming the workload port. want, when not 0, is the port the connection
// was redirected from, which the header must name too. targetAddr labels
// the metrics. The connection stays pending until the peer has
// authenticated and sent its header, in the handshake stage and then the
// header stage (pending.go).
func (p *Proxy) handleMesh(ctx context.Context, log *zap.Logger, pc *pendingConn, conn net.Conn, want uint16, targetAddr string) {
	tc, peer, err := p.handshake(ctx, pc, conn)
	if err == nil {
		// The handshake moved it already (VerifyConnection), unless the
		// TLS configuration took another path: then here.
		err = pc.verified()
	}
	if err != nil {
		if pc.release() || errors.Is(err, errShed) {
			// Reset to make room for a newer connection, or refused by
			// a cap, and counted then.
			_ = conn.Close()
			return
		}
		p.refuse(log, conn, err)
		return
	}
	log = log.With(zap.String("client_id", peer.ID.String()))
	hdr, err := p.readHeader(tc)
	if pc.release() {
		_ = conn.Close() // shed while waiting for the header, counted then
		return
	}
	if err != nil {
		p.refuse(log, tc, err)
		return
	}
	if want == 0 {
		// A redirected connection's logger names its port already; a
		// header naming another is refused below, the error saying both.
		log = log.With(zap.Uint16("port", hdr.Port))
	}
	if want != 0 && hdr.Port != want {
		p.refuse(log, tc, fmt.Errorf("%w: header names port %d on a connection for port %d", errBadHeader, hdr.Port, want))
		return
	}
	_, err = p.cfg.Policy.Check(hdr.Port, peer.ID, peer.Chains)
	if err != nil && hdr.SessionProtocol == header.None {
		p.refuse(log, tc, err)
		return
	}
	// Counted from here, once the peer is known: like every tcp_* series,
	// the bytes are the payload, without TLS framing or the header.
	src := p.cfg.Transport.Track(tc, metrics.Labels{
		Direction: "inbound", Peer: "src", TLS: "true", ClientID: peer.ID.String(), TargetAddr: targetAddr,
	})
	if hdr.SessionProtocol != header.None {
		p.serveHTTP(ctx, src, peer, hdr.Port, hdr.SessionProtocol, p.httpRefusal(log, err))
		return
	}
	p.forward(ctx, log, src, peer, hdr.Port)
}

// httpRefusal counts and logs a policy refusal of an HTTP connection and
// returns its reason, for serveHTTP to answer each request 403 with: HTTP
// clients are refused at the HTTP level. nil gives "", no refusal.
func (p *Proxy) httpRefusal(log *zap.Logger, err error) string {
	if err == nil {
		return ""
	}
	reason := refusalReason(err)
	p.cfg.Metrics.refused(reason)
	p.logRefusal(log, "HTTP connection refused", reason, err)
	return reason
}

// refuse closes a connection the proxy will not carry, counting and logging
// why. Closing a TLS conn first sends an alert or close_notify, so the peer
// learns it was refused rather than seeing a bare reset.
func (p *Proxy) refuse(log *zap.Logger, conn net.Conn, err error) {
	reason := refusalReason(err)
	p.cfg.Metrics.refused(reason)
	p.logRefusal(log, "connection refused", reason, err)
	_ = conn.Close()
}

// logRefusal logs a refusal unless one with the same reason was logged
// within the last second; the line then says how many it stands for.
func (p *Proxy) logRefusal(log *zap.Logger, msg, reason string, err error) {
	ok, suppressed := p.refusals.Allow(reason, time.Now())
	if !ok {
		return
	}
	fields := []zap.Field{zap.String("reason", reason), zap.Error(err)}
	if suppressed > 0 {
		fields = append(fields, zap.Int("suppressed", suppressed))
	}
	log.Info(msg, fields...)
}
