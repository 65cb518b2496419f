package outbound

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/seed722d2a70/meshproxy/config"
	pb "github.com/seed722d2a70/meshproxy/destination/destinationpb"
	"github.com/seed722d2a70/meshproxy/metrics"
	"github.com/seed722d2a70/meshproxy/ports"
)

// ErrUnmeshedRefused is returned by Route for a destination that is not in
// the table when the proxy is configured to refuse unmeshed traffic.
var ErrUnmeshedRefused = errors.New("destination is not meshed and unmeshed traffic is refused")

// DefaultInboundPort is a meshed peer's inbound proxy port unless its
// destination entry says otherwise.
const DefaultInboundPort = 4143

// Target is where the app meant to connect: the name or IP it used and the
// port.
type Target struct {
	Host string
	Port uint16
}

// ParseTarget parses "host:port".
func ParseTarget(s string) (Target, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return Target{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return Target{}, fmt.Errorf("target %q: bad port", s)
	}
	return Target{Host: host, Port: uint16(p)}, nil
}

// String returns host:port.
func (t Target) String() string { return net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port))) }

// Route is the routing decision for one connection.
type Route struct {
	Target Target
	// Meshed routes go over mTLS to the peer's inbound proxy, carrying the
	// target port in the transport header.
	Meshed bool
	// Opaque routes skip protocol detection.
	Opaque bool
	// DialAddr is what to connect to: the peer's inbound port when meshed,
	// the target itself otherwise.
	DialAddr string
	// TLS is the client configuration that authorizes the peer; nil unless
	// Meshed. It is shared by all routes to the destination.
	TLS *tls.Config
	// Endpoints, for a destination the controller resolved, are where its
	// connections go: each picks one (resolve.go), and Meshed, DialAddr and
	// TLS are then the chosen endpoint's. Nil for table routes.
	Endpoints *EndpointSet
	// Service is the Service the destination resolved to, if any, and
	// Endpoint, on a chosen endpoint's route, that endpoint.
	Service  *pb.Service
	Endpoint *pb.Endpoint
}

// dst is the route's destination in the dst_* metric labels.
func (r Route) dst() metrics.Dst {
	var d metrics.Dst
	if r.Service != nil {
		d.Service, d.Namespace = r.Service.Name, r.Service.Namespace
	}
	if r.Endpoint != nil {
		d.Pod = r.Endpoint.Pod
		if d.Namespace == "" {
			d.Namespace = r.Endpoint.Namespace
		}
	}
	return d
}

// TLSFunc builds the client TLS configuration for a destination from the
// identities it may present (SPIFFE IDs, prefixes, trust domains; empty
// means the proxy's own trust domain).
type TLSFunc func(identities []string) (*tls.Config, error)

// Table is an immutable destination table. Build one with NewTable and
// publish it through a Router.
type Table struct {
	byHostPort     map[hostPort]*entry
	byHost         map[string]*entry
	prefixes       []prefixEntry // longest first
	defaultOpaque  ports.Set
	refuseUnmeshed bool

	// meshedNets are consulted only when no entry above matches, so an
	// explicit entry always overrides them, whatever its prefix length.
	meshedNets     []netip.Prefix
	meshedNetEntry *entry
}

type hostPort struct {
	host string
	port uint16
}

type prefixEntry struct {
	prefix netip.Prefix
	e      *entry
}

type entry struct {
	meshed      bool
	opaque      ports.Set
	inboundPort uint16
	address     string
	tls         *tls.Config
}

// NewTable builds a table from configured destinations and meshed networks
// (CIDRs, see config.Config.MeshedNetworks): an IP address no destination
// matches but a meshed network contains is routed as meshed, to its port
// 4143, expecting an identity of the own trust domain. Every entry's TLS
// configuration is built here, once, so routing a connection allocates
// nothing and shares session caches.
func NewTable(dests []config.Destination, meshedNetworks []string, defaultOpaque ports.Set, refuseUnmeshed bool, newTLS TLSFunc) (*Table, error) {
	t := &Table{
		byHostPort:     map[hostPort]*entry{},
		byHost:         map[string]*entry{},
		defaultOpaque:  defaultOpaque,
		refuseUnmeshed: refuseUnmeshed,
	}
	for _, d := range dests {
		e := &entry{meshed: d.Meshed == nil || *d.Meshed, opaque: defaultOpaque, inboundPort: d.InboundPort, address: d.Address}
		if d.OpaquePorts != nil {
			e.opaque = *d.OpaquePorts
		}
		if e.inboundPort == 0 {
			e.inboundPort = DefaultInboundPort
		}
		if e.meshed {
			cfg, err := newTLS(d.Identity)
			if err != nil {
				return nil, fmt.Errorf("destination %q: %w", d.Match, err)
			}
			e.tls = cfg
		}
		if err := t.add(d.Match, e); err != nil {
			return nil, err
		}
	}
	if len(meshedNetworks) > 0 {
		for _, n := range meshedNetworks {
			if err := config.CheckNetwork(n); err != nil {
				return nil, fmt.Errorf("meshed network %q: %w", n, err)
			}
			t.meshedNets = append(t.meshedNets, netip.MustParsePrefix(n).Masked())
		}
		cfg, err := newTLS(nil)
		if err != nil {
			return nil, fmt.Errorf("meshed networks: %w", err)
		}
		t.meshedNetEntry = &entry{meshed: true, opaque: defaultOpaque, inboundPort: DefaultInboundPort, tls: cfg}
	}
	// Longest prefix first, so the first match is the most specific.
	for i := 1; i < len(t.prefixes); i++ {
		for j := i; j > 0 && t.prefixes[j].prefix.Bits() > t.prefixes[j-1].prefix.Bits(); j-- {
			t.prefixes[j], t.prefixes[j-1] = t.prefixes[j-1], t.prefixes[j]
		}
	}
	return t, nil
}

func (t *Table) add(match string, e *entry) error {
	if strings.Contains(match, "/") {
		p, err := netip.ParsePrefix(match)
		if err != nil {
			return fmt.Errorf("destination %q: %w", match, err)
		}
		t.prefixes = append(t.prefixes, prefixEntry{p.Masked(), e})
		return nil
	}
	if host, port, err := net.SplitHostPort(match); err == nil {
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return fmt.Errorf("destination %q: bad port", match)
		}
		t.byHostPort[hostPort{canonicalHost(host), uint16(p)}] = e
		return nil
	}
	t.byHost[canonicalHost(match)] = e
	return nil
}

// canonicalHost lower-cases names, drops a trailing dot, and normalizes IP
// literals, so that equal destinations compare equal.
func canonicalHost(h string) string {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap().String()
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// Route decides how to carry a connection to target.
func (t *Table) Route(target Target) (Route, error) {
	host := canonicalHost(target.Host)
	e := t.byHostPort[hostPort{host, target.Port}]
	if e == nil {
		e = t.byHost[host]
	}
	if e == nil && (len(t.prefixes) > 0 || len(t.meshedNets) > 0) {
		e = t.lookupAddr(host)
	}
	if e == nil {
		if t.refuseUnmeshed {
			return Route{}, fmt.Errorf("%s: %w", target, ErrUnmeshedRefused)
		}
		return Route{Target: target, Opaque: t.defaultOpaque.Contains(target.Port), DialAddr: target.String()}, nil
	}
	r := Route{Target: target, Meshed: e.meshed, Opaque: e.opaque.Contains(target.Port), TLS: e.tls}
	dialHost := target.Host
	if e.address != "" {
		dialHost = e.address
	}
	port := target.Port
	if e.meshed {
		port = e.inboundPort
	}
	r.DialAddr = net.JoinHostPort(dialHost, strconv.Itoa(int(port)))
	return r, nil
}

// lookupAddr finds the entry of an IP address host: the longest matching
// destination prefix, else a meshed network's entry, else nil (also when
// host is a name).
func (t *Table) lookupAddr(host string) *entry {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return nil
	}
	for _, p := range t.prefixes {
		if p.prefix.Contains(a) {
			return p.e
		}
	}
	for _, p := range t.meshedNets {
		if p.Contains(a) {
			return t.meshedNetEntry
		}
	}
	return nil
}

// Router holds the current table. Connections read it without locking; a
// reload swaps it whole, so a connection sees either the old table or the
// new one, and established connections are never touched.
type Router struct {
	table atomic.Pointer[Table]
}

// NewRouter returns a router serving t.
func NewRouter(t *Table) *Router {
	r := &Router{}
	r.table.Store(t)
	return r
}

// Route routes target with the current table.
func (r *Router) Route(target Target) (Route, error) { return r.table.Load().Route(target) }

// Swap replaces the table.
func (r *Router) Swap(t *Table) { r.table.Store(t) }
