// Package outbound is the proxy between the local app and the mesh. For each
// connection the app makes it decides where the connection is going (route),
// what it carries (detect), and how to get it there (dial): meshed
// destinations are reached over mutual TLS at the peer's inbound port, with
// the original port in a transport header; the rest go out as plain TCP.
//
// A connection's path, one file per step: accept.go (listeners, handle;
// transparent.go finds a redirected connection's original destination) →
// route.go (destination table) → the detect package (skipped for opaque
// ports) → dial.go (mTLS + header) → the duplex package (copy both ways).
// A connection detected as HTTP goes to http.go instead: served request by
// request by the httpproxy package over pooled upstream connections.
package outbound

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/detect"
	"github.com/seed722d2a70/meshproxy/httpproxy"
	"github.com/seed722d2a70/meshproxy/internal/duplex"
	"github.com/seed722d2a70/meshproxy/internal/serve"
	"github.com/seed722d2a70/meshproxy/metrics"
	"github.com/seed722d2a70/meshproxy/ports"
)

// Config configures an outbound proxy. Router and Detector are required.
type Config struct {
	Router *Router
	// Discovery, when set, is asked first what is at a destination IP
	// (the destination controller); the Router decides what it does not
	// know.
	Discovery Discovery
	// ClientTLS builds the client configuration that authorizes the given
	// identities, for the endpoints Discovery names; required with it.
	ClientTLS TLSFunc
	// RefuseUnmeshed refuses unmeshed endpoints Discovery names, as the
	// Router refuses unmeshed destinations.
	RefuseUnmeshed bool
	Detector       *detect.Detector
	// DetectMetrics counts the detection outcomes decided outside the
	// Detector (learned, server_first); nil counts nothing.
	DetectMetrics *detect.Metrics
	// ServerFirst remembers destinations whose server speaks first; nil
	// remembers nothing.
	ServerFirst *ServerFirst
	// SpeculateAfter is how long a silent client waits before its
	// destination is connected speculatively to see whether the server
	// speaks first; 0 disables speculation. NoSpeculate lists ports where
	// it never happens.
	SpeculateAfter time.Duration
	NoSpeculate    ports.Set
	// OwnPorts are the proxy's own listening ports. A transparent
	// connection whose original destination is one of them on a loopback
	// address is refused as a loop.
	OwnPorts ports.Set
	// DialTimeout bounds connecting and the mTLS handshake to a peer,
	// queueing for a handshake slot included.
	DialTimeout time.Duration
	// MaxHandshakesPerDestination caps the concurrent handshakes to one
	// destination address (handshakes.go); 0 means the default.
	MaxHandshakesPerDestination int
	// Accept counts the accept loops' failures; nil counts nothing.
	Accept *serve.Metrics
	// Copy configures the two-way copy of established connections.
	Copy duplex.Options
	// Transport counts the tcp_* metrics and Metrics the failures; nil
	// counts nothing.
	Transport *metrics.Transport
	Metrics   *Metrics
	// HTTP counts the request metrics of HTTP connections; nil counts
	// nothing. ResponseTimeout bounds the wait for a response's headers
	// (0: none).
	HTTP *httpproxy.Metrics
	// HTTP2Relay serves HTTP/2 connections with httpproxy's frame relay
	// (the default); false puts them on net/http (config.Config.HTTP2Relay).
	HTTP2Relay      bool
	ResponseTimeout time.Duration
	Log             *zap.Logger
}

// Proxy is an outbound proxy. Create one with New; serve listeners with
// ServeExplicit or ServeTransparent; stop with Shutdown.
type Proxy struct {
	cfg       Config
	dialer    net.Dialer
	srv       *serve.Server
	slots     *handshakeSlots
	http      *httpproxy.Server
	upstreams upstreams
	log       *zap.Logger

	endpointSets endpointSets
	tlsByID      sync.Map // identity → *tls.Config, see tlsFor
}

// New returns an outbound proxy.
func New(cfg Config) *Proxy {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	log := cfg.Log.With(zap.String("direction", "outbound"))
	return &Proxy{
		cfg: cfg,
		srv: serve.New(serve.Config{
			Log: log, Direction: "outbound", Metrics: cfg.Accept,
			OnShed: func() { cfg.Metrics.connectionShed("fd_limit") },
		}),
		slots: newHandshakeSlots(cfg.MaxHandshakesPerDestination, cfg.Metrics),
		http: httpproxy.New(httpproxy.Config{
			Direction: metrics.DirectionOutbound, Copy: cfg.Copy, Metrics: cfg.HTTP, Log: log,
		}),
		upstreams: upstreams{cfg: httpproxy.TransportConfig{ResponseTimeout: cfg.ResponseTimeout}},
		log:       log,
	}
}

// ServeExplicit accepts connections on ln, each meant for target: the
// explicit mode, where the app is pointed at a local port instead of its
// real destination. It blocks until Shutdown.
func (p *Proxy) ServeExplicit(ln net.Listener, target Target) error {
	return p.srv.Serve(ln, func(ctx context.Context, c net.Conn) { p.handle(ctx, c, target) })
}

// Starved reports whether an accept loop is failing for want of file
// descriptors; see serve.Server.Starved.
func (p *Proxy) Starved() bool { return p.srv.Starved() }

// Shutdown stops accepting and waits for connections to finish until ctx is
// done, then closes them. HTTP clients are asked to close (Connection:
// close, GOAWAY) as soon as their requests in flight are answered.
func (p *Proxy) Shutdown(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { _ = p.http.Shutdown(ctx) })
	err := p.srv.Shutdown(ctx)
	wg.Wait()
	p.upstreams.CloseIdle()
	return err
}

// handle carries one connection from the app to target.
func (p *Proxy) handle(ctx context.Context, conn net.Conn, target Target) {
	log := p.log.With(zap.Stringer("target", target), zap.Stringer("client", conn.RemoteAddr()))
	route, err := p.route(ctx, target)
	if err != nil {
		p.cfg.Metrics.connectError(err)
		log.Info("connection refused", zap.Error(err))
		_ = conn.Close()
		return
	}
	conn = p.cfg.Transport.Track(conn, metrics.Labels{
		Direction: "outbound", Peer: "src", TLS: "disabled", TargetAddr: target.String(),
	})

	var (
		upstream net.Conn
		serverID string
		dialed   = route // the route upstream was dialed by
	)
	if !route.Opaque {
		d, err := p.detect(ctx, log, conn, route)
		conn = d.conn
		if err != nil {
			log.Info("protocol detection failed", zap.Error(err))
			_ = conn.Close()
			return
		}
		log.Debug("protocol detected", zap.Stringer("protocol", d.res.Protocol), zap.String("outcome", string(d.res.Outcome)))
		upstream, serverID, dialed = d.upstream, d.serverID, d.dialed
		if upstream == nil && d.res.Protocol != detect.Opaque {
			p.serveHTTP(ctx, conn, route, d.res.Protocol)
			return
		}
	}

	if upstream == nil {
		upstream, serverID, dialed, err = p.dial(ctx, route)
	}
	if err != nil {
		p.cfg.Metrics.connectError(err)
		log.Info("connecting to destination failed", zap.String("dial_addr", route.DialAddr), zap.Error(err))
		_ = conn.Close()
		return
	}
	tlsLabel := "disabled"
	if dialed.Meshed {
		tlsLabel = "true"
	}
	upstream = p.cfg.Transport.Track(upstream, metrics.Labels{
		Direction: "outbound", Peer: "dst", TLS: tlsLabel, ServerID: serverID, TargetAddr: dialed.DialAddr, Dst: dialed.dst(),
	})
	if _, err := duplex.Join(ctx, conn, upstream, p.cfg.Copy); err != nil && !errors.Is(err, context.Canceled) {
		log.Debug("connection ended with an error", zap.Error(err))
	}
}
