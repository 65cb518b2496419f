package outbound

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/seed722d2a70/meshproxy/balance"
	"github.com/seed722d2a70/meshproxy/destination"
	pb "github.com/seed722d2a70/meshproxy/destination/destinationpb"
	"github.com/seed722d2a70/meshproxy/identity"
	"github.com/seed722d2a70/meshproxy/internal/header"
)

// ErrNoEndpoints is returned for a Service the destination controller
// knows, that has no ready endpoint (or none left to try).
var ErrNoEndpoints = errors.New("no ready endpoints")

// Discovery is what the destination controller says is at an address
// (destination.Resolver): a watch whose state follows the controller; false
// means it has not said, and the destination table decides.
type Discovery interface {
	Resolve(ctx context.Context, address string) (*destination.Watch, bool)
}

// maxEndpointAttempts bounds the endpoints one connection or request tries
// before it fails: each failed connect moves on to another endpoint.
const maxEndpointAttempts = 3

// route decides how to carry a connection to target: the destination
// controller's answer for an IP address when it has one (a Service or a
// pod), else the destination table.
func (p *Proxy) route(ctx context.Context, target Target) (Route, error) {
	if p.cfg.Discovery != nil {
		if _, err := netip.ParseAddr(target.Host); err == nil {
			if w, ok := p.cfg.Discovery.Resolve(ctx, target.String()); ok {
				if s, _ := w.State(); s.Kind != pb.Kind_KIND_UNKNOWN {
					return p.resolved(target, w, s)
				}
			}
		}
	}
	return p.cfg.Router.Route(target)
}

// resolved is the route to a Service or pod the controller resolved, in
// state s of watch w: its endpoints, each connection (or HTTP request)
// choosing one.
func (p *Proxy) resolved(target Target, w *destination.Watch, s destination.State) (Route, error) {
	var again func() (*destination.Watch, bool)
	if p.cfg.Discovery != nil {
		addr := target.String()
		again = func() (*destination.Watch, bool) { return p.cfg.Discovery.Resolve(context.Background(), addr) }
	}
	set := p.endpointSets.get(target.String(), w, again)
	r := Route{Target: target, Endpoints: set, Service: s.Service}
	if s.Service != nil {
		r.Opaque = s.Service.Opaque
	} else {
		for _, ep := range s.Endpoints {
			r.Opaque = ep.Opaque // KIND_POD: the one endpoint's word
		}
	}
	if set.bal.Len() == 0 {
		return Route{}, fmt.Errorf("%s: %w", target, ErrNoEndpoints)
	}
	return r, nil
}

// EndpointSet is a resolved destination's endpoints and their balancer,
// shared by every connection to the destination so that the balancer sees
// all of their load. It follows the destination's watch at each choice, so
// a connection that lives for hours (gRPC's) sees replicas come and go.
type EndpointSet struct {
	bal *balance.Balancer
	// again resolves the destination anew, when the resolver stopped the
	// watch (unused for long, or evicted) while a connection still uses
	// the set; nil for a fixed answer.
	again func() (*destination.Watch, bool)

	mu       sync.Mutex
	watch    *destination.Watch
	version  uint64
	eps      map[string]*pb.Endpoint
	lastUsed time.Time
	// routes caches endpointRoute's answers for this version, by address
	// and opaqueness: HTTP asks for one per request.
	routes map[routeKey]Route
}

type routeKey struct {
	addr   string
	opaque bool
}

// follows reports whether the set follows w.
func (s *EndpointSet) follows(w *destination.Watch) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.watch == w
}

// refresh brings the set up to its watch's state, if that changed.
func (s *EndpointSet) refresh(now time.Time) {
	s.mu.Lock()
	w := s.watch
	s.mu.Unlock()
	if s.again != nil {
		select {
		case <-w.Done():
			// A long-lived connection idle for 10 min, say: its set
			// would keep a state that no longer follows the controller.
			if nw, ok := s.again(); ok && nw != w {
				s.mu.Lock()
				if s.watch == w {
					s.watch, s.version, s.eps = nw, 0, nil
				}
				s.mu.Unlock()
			}
		default:
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Read under s.mu, so that a slower caller never installs a state
	// older than one installed meanwhile.
	st, _ := s.watch.State()
	s.lastUsed = now
	if s.eps != nil && st.Version <= s.version {
		return
	}
	s.version, s.eps, s.routes = st.Version, st.Endpoints, map[routeKey]Route{}
	if s.eps == nil {
		s.eps = map[string]*pb.Endpoint{}
	}
	ids := make([]string, 0, len(st.Endpoints))
	for a := range st.Endpoints {
		ids = append(ids, a)
	}
	s.bal.Update(ids)
}

// allMeshed reports whether every endpoint is meshed now, for the labels of
// a connection whose requests each choose one.
func (s *EndpointSet) allMeshed() bool {
	s.refresh(time.Now())
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ep := range s.eps {
		if !ep.Meshed {
			return false
		}
	}
	return len(s.eps) > 0
}

// pick chooses an endpoint not in skip, of the current state; see
// balance.Balancer.Pick.
func (s *EndpointSet) pick(skip map[string]bool) (*balance.Handle, *pb.Endpoint, bool) {
	s.refresh(time.Now())
	h, ok := s.bal.Pick(skip)
	if !ok {
		return nil, nil, false
	}
	s.mu.Lock()
	ep := s.eps[h.ID()]
	s.mu.Unlock()
	if ep == nil { // gone between the two locks: as if it had failed
		h.Done()
		skip[h.ID()] = true
		return s.pick(skip)
	}
	return h, ep, true
}

// endpointSets are the EndpointSets of resolved destinations, by address.
// Sets unused for destination.WatchIdleAfter are dropped, like the
// resolver's watches.
type endpointSets struct {
	mu    sync.Mutex
	m     map[string]*EndpointSet
	swept time.Time
}

// get returns address's set, following w and brought up to its state; again
// resolves address anew (see EndpointSet).
func (ss *endpointSets) get(address string, w *destination.Watch, again func() (*destination.Watch, bool)) *EndpointSet {
	now := time.Now()
	ss.mu.Lock()
	if now.Sub(ss.swept) >= time.Minute {
		ss.swept = now
		for a, set := range ss.m {
			set.mu.Lock()
			idle := now.Sub(set.lastUsed) >= destination.WatchIdleAfter
			set.mu.Unlock()
			if idle {
				delete(ss.m, a)
			}
		}
	}
	set := ss.m[address]
	if set != nil && !set.follows(w) {
		set = nil // the resolver started another watch of address
	}
	if set == nil {
		if ss.m == nil {
			ss.m = map[string]*EndpointSet{}
		}
		set = &EndpointSet{bal: balance.New(0), watch: w, again: again}
		ss.m[address] = set
	}
	ss.mu.Unlock()
	set.refresh(now)
	return set
}

// endpointRoute is how to reach one endpoint. A meshed one is dialed over
// mTLS, authorizing its own SPIFFE ID, with the transport header naming its
// target port. Opaque traffic goes to the pod's inbound port (the seed's
// retargeting: a NetworkPolicy for an opaque port must allow it); HTTP
// keeps its port, where the pod's firewall rules hand it to its proxy. An
// unmeshed endpoint is dialed as it is, unless unmeshed traffic is refused.
func (p *Proxy) endpointRoute(r Route, ep *pb.Endpoint, opaque bool) (Route, error) {
	set := r.Endpoints
	key := routeKey{ep.Address, opaque}
	set.mu.Lock()
	er, ok := set.routes[key]
	set.mu.Unlock()
	if ok {
		return er, nil
	}
	er, err := p.newEndpointRoute(r, ep, opaque)
	if err != nil {
		return Route{}, err
	}
	set.mu.Lock()
	if set.eps[ep.Address] == ep { // still this version's endpoint
		set.routes[key] = er
	}
	set.mu.Unlock()
	return er, nil
}

// newEndpointRoute computes endpointRoute's answer.
func (p *Proxy) newEndpointRoute(r Route, ep *pb.Endpoint, opaque bool) (Route, error) {
	host, portStr, err := net.SplitHostPort(ep.Address)
	if err != nil {
		return Route{}, fmt.Errorf("endpoint %q: %w", ep.Address, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return Route{}, fmt.Errorf("endpoint %q: bad port", ep.Address)
	}
	er := Route{Target: Target{Host: host, Port: uint16(port)}, Opaque: r.Opaque, DialAddr: ep.Address, Service: r.Service, Endpoint: ep}
	if !ep.Meshed {
		if p.cfg.RefuseUnmeshed {
			return Route{}, fmt.Errorf("%s: %w", ep.Address, ErrUnmeshedRefused)
		}
		return er, nil
	}
	cfg, err := p.tlsFor(ep.Identity)
	if err != nil {
		return Route{}, fmt.Errorf("endpoint %s: %w", ep.Address, err)
	}
	er.Meshed, er.TLS = true, cfg
	if opaque {
		in := ep.InboundPort
		if in == 0 || in > 65535 {
			in = DefaultInboundPort
		}
		er.DialAddr = net.JoinHostPort(host, strconv.Itoa(int(in)))
	}
	return er, nil
}

// tlsFor returns the client configuration that authorizes exactly id,
// built once per identity so that sessions resume across connections. id
// must be one workload's SPIFFE ID: the controller's word is never taken
// for a pattern (a trust domain, a prefix, "*") that would admit others.
func (p *Proxy) tlsFor(id string) (*tls.Config, error) {
	if cfg, ok := p.tlsByID.Load(id); ok {
		return cfg.(*tls.Config), nil
	}
	if p.cfg.ClientTLS == nil {
		return nil, errors.New("no client TLS configuration for meshed endpoints")
	}
	if sid, err := spiffeid.FromString(id); err != nil || sid.Path() == "" {
		return nil, fmt.Errorf("%w: endpoint identity %q is not a workload's SPIFFE ID", identity.ErrUnauthorized, id)
	}
	cfg, err := p.cfg.ClientTLS([]string{id})
	if err != nil {
		return nil, err
	}
	actual, _ := p.tlsByID.LoadOrStore(id, cfg)
	return actual.(*tls.Config), nil
}

// dialBalanced connects a connection that is not HTTP to one of r's
// endpoints, moving on to another when one fails to connect: to the
// endpoint's inbound port when the destination declares the endpoint's
// port opaque, to the port itself otherwise (over mTLS when meshed, where
// the pod's rules hand it to its proxy), so that only opaque ports need
// 4143 in a NetworkPolicy. The returned conn holds its endpoint's work in
// the balancer until closed; route is the endpoint's, or r on failure.
func (p *Proxy) dialBalanced(ctx context.Context, r Route) (conn net.Conn, serverID string, route Route, err error) {
	skip := map[string]bool{}
	err = fmt.Errorf("%s: %w", r.Target, ErrNoEndpoints)
	for range maxEndpointAttempts {
		h, ep, ok := r.Endpoints.pick(skip)
		if !ok {
			break
		}
		er, rerr := p.endpointRoute(r, ep, ep.Opaque)
		if rerr != nil {
			h.Done()
			return nil, "", r, rerr
		}
		start := time.Now()
		c, id, derr := p.dialSession(ctx, er, header.None)
		if derr == nil {
			h.Observe(time.Since(start))
			p.cfg.Metrics.endpointChoice(true)
			return &endpointConn{Conn: c, done: h.Done}, id, er, nil
		}
		if localQueueError(derr) {
			// Queued in this proxy, not refused by the endpoint: no
			// mark against it, and no other endpoint's dial restarting
			// the timeout only to queue again.
			h.Done()
			return nil, "", r, derr
		}
		h.Fail()
		h.Done()
		p.cfg.Metrics.endpointChoice(false)
		skip[h.ID()] = true
		err = derr
		if ctx.Err() != nil {
			break
		}
	}
	return nil, "", r, err
}

// endpointConn releases its endpoint's unit of work in the balancer when
// closed.
type endpointConn struct {
	net.Conn
	once sync.Once
	done func()
}

func (c *endpointConn) Close() error {
	c.once.Do(c.done)
	return c.Conn.Close()
}

// CloseWrite and CloseRead forward half-closes to the conn underneath.
func (c *endpointConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("%T: %w", c.Conn, errors.ErrUnsupported)
}

func (c *endpointConn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return fmt.Errorf("%T: %w", c.Conn, errors.ErrUnsupported)
}
