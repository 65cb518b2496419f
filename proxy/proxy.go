// Package proxy assembles a running meshproxy from its configuration: the
// identity source, the inbound and outbound proxies, the admin server, and
// reloading of the destination table. cmd/meshproxy only parses flags and
// calls Run; tests run whole proxies in-process the same way.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/admin"
	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/destination"
	"github.com/seed722d2a70/meshproxy/detect"
	"github.com/seed722d2a70/meshproxy/httpproxy"
	"github.com/seed722d2a70/meshproxy/identity"
	"github.com/seed722d2a70/meshproxy/inbound"
	"github.com/seed722d2a70/meshproxy/internal/duplex"
	"github.com/seed722d2a70/meshproxy/internal/serve"
	"github.com/seed722d2a70/meshproxy/metrics"
	"github.com/seed722d2a70/meshproxy/outbound"
	"github.com/seed722d2a70/meshproxy/ports"
)

// Options are what a proxy needs besides its configuration.
type Options struct {
	Log *zap.Logger
	// Level is the logger's level, exposed on the admin server.
	Level zap.AtomicLevel
	// Registry receives every metric and is served on /metrics.
	Registry *prometheus.Registry
	// Identity, when set, is used instead of building a source from the
	// configuration (tests inject one; Run does not close it).
	Identity identity.Source
}

// Addrs are the addresses the proxy listens on, known once it is ready.
type Addrs struct {
	Admin     net.Addr
	Inbound   net.Addr
	Outbound  net.Addr
	Listeners []net.Addr // explicit outbound listeners, in config order
}

// Proxy is one meshproxy: an inbound and an outbound proxy sharing an
// identity, plus the admin server.
type Proxy struct {
	cfg  config.Config
	opts Options
	log  *zap.Logger

	listening atomic.Bool
	src       atomic.Pointer[identity.Source]
	// accepting are the inbound and outbound proxies, set before listening
	// is: Ready asks them whether they are out of file descriptors.
	accepting []interface{ Starved() bool }
	readyCh   chan struct{} // closed when first ready
	addrs     Addrs
}

// New checks cfg and returns a proxy ready to Run.
func New(cfg config.Config, opts Options) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := checkConfig(cfg); err != nil {
		return nil, err
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.Level == (zap.AtomicLevel{}) {
		opts.Level = zap.NewAtomicLevel()
	}
	return &Proxy{cfg: cfg, opts: opts, log: opts.Log, readyCh: make(chan struct{})}, nil
}

// Ready reports whether the proxy's listeners are up and it holds a valid
// identity: what /ready answers. It is computed on each call, so an SVID
// that expires while the SPIRE agent is away makes the proxy not ready
// without any event having to say so.
//
// It is false too while an accept loop fails for want of file descriptors:
// the pod then leaves its Services' endpoints until descriptors free up.
func (p *Proxy) Ready() bool {
	src := p.src.Load()
	if !p.listening.Load() || src == nil || !(*src).Ready() {
		return false
	}
	for _, a := range p.accepting {
		if a.Starved() {
			return false
		}
	}
	return true
}

// WaitReady blocks until the proxy first becomes ready or ctx is done, and
// returns its listening addresses.
func (p *Proxy) WaitReady(ctx context.Context) (Addrs, error) {
	select {
	case <-p.readyCh:
		return p.addrs, nil
	case <-ctx.Done():
		return Addrs{}, ctx.Err()
	}
}

// Run runs the proxy until ctx is done or POST /shutdown, then stops
// accepting, lets connections drain for the configured grace period, and
// returns nil. An error means the proxy could not start or failed.
func (p *Proxy) Run(ctx context.Context) error {
	ctx, shutdown := context.WithCancel(ctx)
	defer shutdown()
	reg := p.opts.Registry

	adminLn, err := net.Listen("tcp", p.cfg.Admin.Addr)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	adminSrv := &http.Server{
		Handler: admin.NewHandler(admin.Options{
			Gatherer: reg, Ready: p.Ready, Level: p.opts.Level, Shutdown: shutdown,
		}),
		// Scrapers and probes keep connections alive; these bound what an
		// idle or slow client holds. No write timeout: a CPU profile
		// takes as long as it was asked to.
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	// Every serving goroutine may report once, even after Run returned.
	errc := make(chan error, 8+len(p.cfg.Outbound.Listeners))
	go func() {
		if err := adminSrv.Serve(adminLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("admin server: %w", err)
		}
	}()
	defer adminSrv.Close()
	p.addrs.Admin = adminLn.Addr()
	p.log.Info("admin server listening", zap.Stringer("addr", adminLn.Addr()))

	src := p.opts.Identity
	if src == nil {
		if src, err = NewIdentitySource(ctx, p.cfg.Identity, p.log, reg); err != nil {
			return err
		}
		defer src.Close()
	}
	// No listener accepts mesh traffic before the proxy has an identity.
	if err := src.WaitReady(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("waiting for an identity: %w", err)
	}
	svid, err := src.GetX509SVID()
	if err != nil {
		return err
	}
	p.log.Info("identity ready", zap.String("spiffe_id", svid.ID.String()))
	td := svid.ID.TrustDomain()

	transport, err := metrics.NewTransport(reg)
	if err != nil {
		return err
	}
	detectMetrics, err := detect.NewMetrics(reg)
	if err != nil {
		return err
	}
	inMetrics, err := inbound.NewMetrics(reg)
	if err != nil {
		return err
	}
	outMetrics, err := outbound.NewMetrics(reg)
	if err != nil {
		return err
	}
	httpMetrics, err := httpproxy.NewMetrics(reg, transport.TargetAddrs())
	if err != nil {
		return err
	}
	acceptMetrics, err := serve.NewMetrics(reg)
	if err != nil {
		return err
	}
	authorizer := authorizerFor(td)

	// One buffer pool for every copy through TLS: steady-state copying
	// allocates nothing per connection.
	copyOpts := duplex.Options{Pool: duplex.NewBufferPool(0), HalfCloseTimeout: p.cfg.HalfCloseTimeout}

	// Listen first, so that the proxy's own ports are known for loop
	// prevention even when configured as :0.
	inLn, err := net.Listen("tcp", p.cfg.Inbound.Addr)
	if err != nil {
		return fmt.Errorf("inbound listener: %w", err)
	}
	outLn, err := net.Listen("tcp", p.cfg.Outbound.Addr)
	if err != nil {
		_ = inLn.Close()
		return fmt.Errorf("outbound listener: %w", err)
	}
	listeners := []net.Listener{inLn, outLn}
	defer func() {
		for _, ln := range listeners {
			_ = ln.Close()
		}
	}()
	// The kernel redirects an app's IPv6 connections to [::1], which an
	// IPv4 loopback outbound address does not cover: it gets a twin there.
	var outLn6 net.Listener
	if p.cfg.Transparent {
		if outLn6, err = loopback6Twin(outLn); err != nil {
			return fmt.Errorf("outbound listener: %w", err)
		}
		if outLn6 == nil {
			p.log.Info("no IPv6 loopback: IPv6 connections will not be intercepted", zap.Stringer("outbound_addr", outLn.Addr()))
		} else {
			defer outLn6.Close()
		}
	}
	var targets []outbound.Target
	for _, l := range p.cfg.Outbound.Listeners {
		target, err := outbound.ParseTarget(l.Target)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", l.Listen)
		if err != nil {
			return fmt.Errorf("outbound listener %s: %w", l.Listen, err)
		}
		listeners = append(listeners, ln)
		targets = append(targets, target)
	}
	own := ownPorts(append([]net.Listener{adminLn}, listeners...))

	policy, err := inbound.NewPolicy(p.cfg.Inbound, own, authorizer)
	if err != nil {
		return err
	}
	// On redirected connections (transparent mode), detection tells a peer
	// proxy's mTLS from an unmeshed client.
	inDetector := detect.New(detect.Config{
		Timeout: p.cfg.Detect.Timeout, Direction: detect.Inbound, Metrics: detectMetrics, Logger: p.log,
	})
	in := inbound.New(inbound.Config{
		TLS:                      identity.ServerConfig(src, tlsconfig.AuthorizeAny()),
		Policy:                   policy,
		WorkloadHost:             p.cfg.Inbound.WorkloadHost,
		HandshakeTimeout:         p.cfg.Inbound.HandshakeTimeout,
		HeaderTimeout:            p.cfg.Inbound.HeaderTimeout,
		MaxPending:               p.cfg.Inbound.MaxPending,
		MaxPendingPerSource:      p.cfg.Inbound.MaxPendingPerSource,
		MaxHandshakeBytes:        p.cfg.Inbound.MaxHandshakeBytes,
		MaxUnmeshedHTTP:          p.cfg.Inbound.MaxUnmeshedHTTP,
		MaxUnmeshedHTTPPerSource: p.cfg.Inbound.MaxUnmeshedHTTPPerSource,
		Accept:                   acceptMetrics,
		Transparent:              p.cfg.Transparent,
		Detector:                 inDetector,
		OpaquePorts:              p.cfg.OpaquePorts,
		Copy:                     copyOpts,
		Metrics:                  inMetrics,
		Transport:                transport,
		HTTP:                     httpMetrics,
		HTTP2Relay:               p.cfg.HTTP2Relay,
		Log:                      p.log,
	})

	clientTLS := newClientTLSFunc(src, authorizer)
	table, err := outbound.NewTable(p.cfg.Destinations, p.cfg.MeshedNetworks, p.cfg.OpaquePorts, p.cfg.Outbound.RefuseUnmeshed, clientTLS)
	if err != nil {
		return err
	}
	router := outbound.NewRouter(table)
	learned := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "protocol_detect_server_first_destinations",
		Help: "Destinations remembered as server-speaks-first, whose connections skip detection.",
	})
	if err := reg.Register(learned); err != nil {
		return err
	}
	disc, err := p.newDiscovery(src, td, authorizer)
	if err != nil {
		return err
	}
	var discovery outbound.Discovery // a nil *discovery would not be nil
	if disc != nil {
		defer disc.Close()
		discovery = disc
	}
	out := outbound.New(outbound.Config{
		Router:         router,
		Discovery:      discovery,
		ClientTLS:      clientTLS,
		RefuseUnmeshed: p.cfg.Outbound.RefuseUnmeshed,
		Detector: detect.New(detect.Config{
			Timeout: p.cfg.Detect.Timeout, Direction: "outbound", Metrics: detectMetrics, Logger: p.log,
		}),
		DetectMetrics:               detectMetrics,
		ServerFirst:                 outbound.NewServerFirst(p.cfg.Detect.ServerFirstMax, p.cfg.Detect.ServerFirstTTL, learned),
		SpeculateAfter:              p.cfg.Detect.SpeculateAfter,
		NoSpeculate:                 p.cfg.Detect.NoSpeculatePorts,
		OwnPorts:                    own,
		DialTimeout:                 p.cfg.Outbound.DialTimeout,
		MaxHandshakesPerDestination: p.cfg.Outbound.MaxHandshakesPerDestination,
		Accept:                      acceptMetrics,
		Copy:                        copyOpts,
		Transport:                   transport,
		Metrics:                     outMetrics,
		HTTP:                        httpMetrics,
		ResponseTimeout:             p.cfg.Outbound.ResponseTimeout,
		HTTP2Relay:                  p.cfg.HTTP2Relay,
		Log:                         p.log,
	})
	if p.cfg.Path != "" {
		go p.watchDestinations(ctx, router, clientTLS)
	}

	go func() { errc <- ignoreClosed(in.Serve(inLn)) }()
	for i, ln := range listeners[2:] {
		go func() { errc <- ignoreClosed(out.ServeExplicit(ln, targets[i])) }()
		p.addrs.Listeners = append(p.addrs.Listeners, ln.Addr())
		p.log.Info("outbound listener", zap.Stringer("addr", ln.Addr()), zap.Stringer("target", targets[i]))
	}
	// In transparent mode the outbound port receives the app's redirected
	// connections; otherwise it is only held, so nothing else takes it.
	if p.cfg.Transparent {
		go func() { errc <- ignoreClosed(out.ServeTransparent(outLn)) }()
		if outLn6 != nil {
			go func() { errc <- ignoreClosed(out.ServeTransparent(outLn6)) }()
		}
	}
	p.addrs.Inbound, p.addrs.Outbound = inLn.Addr(), outLn.Addr()
	p.log.Info("proxy ready", zap.Stringer("inbound_addr", inLn.Addr()), zap.Stringer("outbound_addr", outLn.Addr()),
		zap.Bool("transparent", p.cfg.Transparent))
	p.src.Store(&src)
	p.accepting = []interface{ Starved() bool }{in, out}
	p.listening.Store(true)
	close(p.readyCh)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	p.listening.Store(false)
	p.log.Info("shutting down: draining connections", zap.Duration("grace", p.cfg.ShutdownGrace))
	drainCtx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownGrace)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range []interface{ Shutdown(context.Context) error }{in, out} {
		wg.Go(func() {
			if err := s.Shutdown(drainCtx); err != nil {
				p.log.Warn("connections cut short at the end of the grace period", zap.Error(err))
			}
		})
	}
	wg.Wait()
	p.log.Info("shut down")
	return runErr
}

// newDiscovery connects to the destination controller when one is
// configured; nil otherwise. Readiness does not depend on it: a controller
// outage must never take pods out of service, and connections then fall
// back to what the proxy knew or to its own table.
func (p *Proxy) newDiscovery(src identity.Source, td spiffeid.TrustDomain, authorizer func([]string) (tlsAuthorizer, error)) (*discovery, error) {
	if p.cfg.Outbound.DestinationAddr == "" {
		return nil, nil
	}
	ids := p.cfg.Outbound.DestinationIdentity
	if len(ids) == 0 {
		ids = []string{"spiffe://" + td.Name() + config.DefaultDestinationIDPath}
	}
	authz, err := authorizer(ids)
	if err != nil {
		return nil, fmt.Errorf("destination identity: %w", err)
	}
	client, err := destination.NewClient(p.cfg.Outbound.DestinationAddr,
		identity.ClientConfig(src, authz, identity.WithNextProtos("h2")), p.log.With(zap.String("component", "destination")))
	if err != nil {
		return nil, err
	}
	m, err := destination.NewResolverMetrics(p.opts.Registry)
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	p.log.Info("resolving destinations with the destination controller", zap.String("addr", p.cfg.Outbound.DestinationAddr))
	return &discovery{destination.NewResolver(client, p.cfg.Outbound.DestinationWait, m), client}, nil
}

// discovery is the resolver with the client it owns.
type discovery struct {
	*destination.Resolver
	client *destination.Client
}

func (d *discovery) Close() {
	d.Resolver.Close()
	_ = d.client.Close()
}

// loopback6Twin listens on [::1] at ln's port when ln is on IPv4 loopback,
// and returns nil, nil when ln is not, or the host has no IPv6 loopback.
func loopback6Twin(ln net.Listener) (net.Listener, error) {
	a, ok := ln.Addr().(*net.TCPAddr)
	if !ok || !a.IP.IsLoopback() || a.IP.To4() == nil {
		return nil, nil
	}
	twin, err := net.Listen("tcp6", net.JoinHostPort("::1", strconv.Itoa(a.Port)))
	if errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT) {
		return nil, nil
	}
	return twin, err
}

func ownPorts(lns []net.Listener) ports.Set {
	var own ports.Set
	for _, ln := range lns {
		if _, port, err := net.SplitHostPort(ln.Addr().String()); err == nil {
			if n, err := strconv.ParseUint(port, 10, 16); err == nil {
				own.Add(uint16(n))
			}
		}
	}
	return own
}

func ignoreClosed(err error) error {
	if err == nil || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// checkConfig builds, once and without an identity, what the configuration
// describes beyond what config.Validate checks alone: the inbound policy,
// the destination table and the outbound listeners' targets. A mistake in
// them is then reported by New, not after Run's wait for the first SVID
// (which, with an agent that never answers, would hide it for good).
func checkConfig(cfg config.Config) error {
	authorizer := authorizerFor(spiffeid.RequireTrustDomainFromString("config-check.invalid"))
	if _, err := inbound.NewPolicy(cfg.Inbound, ports.Set{}, authorizer); err != nil {
		return fmt.Errorf("%w: %w", config.ErrInvalid, err)
	}
	checkTLS := func(ids []string) (*tls.Config, error) {
		if _, err := authorizer(ids); err != nil {
			return nil, err
		}
		return &tls.Config{}, nil
	}
	if _, err := outbound.NewTable(cfg.Destinations, cfg.MeshedNetworks, cfg.OpaquePorts, cfg.Outbound.RefuseUnmeshed, checkTLS); err != nil {
		return fmt.Errorf("%w: %w", config.ErrInvalid, err)
	}
	if _, err := authorizer(cfg.Outbound.DestinationIdentity); err != nil {
		return fmt.Errorf("%w: destination identity: %w", config.ErrInvalid, err)
	}
	for _, l := range cfg.Outbound.Listeners {
		if _, err := outbound.ParseTarget(l.Target); err != nil {
			return fmt.Errorf("%w: outbound listener %s: %w", config.ErrInvalid, l.Listen, err)
		}
	}
	return nil
}
