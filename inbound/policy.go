package inbound

import (
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/ports"
)

// Refusals after the handshake, each counted under a reason label of the
// same name.
var (
	// ErrUnauthorized: the peer's SPIFFE ID may not reach the port.
	ErrUnauthorized = errors.New("peer not authorized for port")
	// ErrPortNotAllowed: the port is not in the configured allow-list.
	ErrPortNotAllowed = errors.New("port not allowed")
	// ErrIdentityRequired: a plaintext client without a mesh identity
	// reached a port whose policy requires one.
	ErrIdentityRequired = errors.New("port requires a mesh identity")
)

// Protocol is a port's protocol hint, like Linkerd's Server proxyProtocol.
type Protocol uint8

// Protocol hints. Opaque and TLS ports are forwarded without detection.
const (
	ProtocolUnknown Protocol = iota // detect
	ProtocolHTTP1
	ProtocolHTTP2
	ProtocolGRPC
	ProtocolOpaque
	ProtocolTLS
)

// ParseProtocol parses a hint as written in configuration.
func ParseProtocol(s string) (Protocol, error) {
	switch s {
	case "", "unknown":
		return ProtocolUnknown, nil
	case "HTTP/1":
		return ProtocolHTTP1, nil
	case "HTTP/2":
		return ProtocolHTTP2, nil
	case "gRPC":
		return ProtocolGRPC, nil
	case "opaque":
		return ProtocolOpaque, nil
	case "TLS":
		return ProtocolTLS, nil
	}
	return 0, fmt.Errorf("unknown protocol %q", s)
}

// SkipsDetection reports whether connections to a port with this hint are
// forwarded as bytes without looking at them.
func (p Protocol) SkipsDetection() bool { return p == ProtocolOpaque || p == ProtocolTLS }

// PortRule is what the policy says about one port.
type PortRule struct {
	Authorize tlsconfig.Authorizer
	Protocol  Protocol
}

// Policy decides, per workload port, whether a peer may connect and how the
// connection is handled. It is immutable once built.
type Policy struct {
	def     PortRule
	rules   []portRule
	allow   ports.Set
	ownPort ports.Set

	requireIdentity      bool
	requireIdentityPorts ports.Set
}

type portRule struct {
	ports ports.Set
	rule  PortRule
}

// AuthorizerFunc builds an authorizer from configured identities; empty
// means the proxy's own trust domain.
type AuthorizerFunc func(identities []string) (tlsconfig.Authorizer, error)

// NewPolicy builds the inbound policy. own are the proxy's own listening
// ports, which are never forwarded to.
func NewPolicy(cfg config.Inbound, own ports.Set, authorizer AuthorizerFunc) (*Policy, error) {
	def, err := authorizer(cfg.Authorize)
	if err != nil {
		return nil, fmt.Errorf("inbound authorization: %w", err)
	}
	p := &Policy{
		def: PortRule{Authorize: def}, allow: cfg.AllowPorts, ownPort: own,
		requireIdentity: cfg.RequireIdentity, requireIdentityPorts: cfg.RequireIdentityPorts,
	}
	for i, pp := range cfg.Ports {
		r := portRule{ports: pp.Ports, rule: PortRule{Authorize: def}}
		if len(pp.Authorize) > 0 {
			if r.rule.Authorize, err = authorizer(pp.Authorize); err != nil {
				return nil, fmt.Errorf("inbound port policy %d: %w", i, err)
			}
		}
		if r.rule.Protocol, err = ParseProtocol(pp.Protocol); err != nil {
			return nil, fmt.Errorf("inbound port policy %d: %w", i, err)
		}
		p.rules = append(p.rules, r)
	}
	return p, nil
}

// Rule returns the rule for port without checking a peer; for plaintext
// decisions and protocol hints.
func (p *Policy) Rule(port uint16) PortRule {
	for _, r := range p.rules {
		if r.ports.Contains(port) {
			return r.rule
		}
	}
	return p.def
}

// Check decides whether the peer with the given verified identity may reach
// the workload on port. Errors wrap ErrLoop, ErrPortNotAllowed or
// ErrUnauthorized.
func (p *Policy) Check(port uint16, peer spiffeid.ID, chains [][]*x509.Certificate) (PortRule, error) {
	if err := p.checkPort(port); err != nil {
		return PortRule{}, err
	}
	rule := p.Rule(port)
	if err := rule.Authorize(peer, chains); err != nil {
		return PortRule{}, fmt.Errorf("%s to port %d: %w: %w", peer, port, ErrUnauthorized, err)
	}
	return rule, nil
}

// CheckUnauthenticated decides whether a plaintext client, which has no
// mesh identity, may reach the workload on port. Errors wrap ErrLoop,
// ErrPortNotAllowed or ErrIdentityRequired.
func (p *Policy) CheckUnauthenticated(port uint16) (PortRule, error) {
	if err := p.checkPort(port); err != nil {
		return PortRule{}, err
	}
	if p.requireIdentity || p.requireIdentityPorts.Contains(port) {
		return PortRule{}, fmt.Errorf("port %d: %w", port, ErrIdentityRequired)
	}
	return p.Rule(port), nil
}

// checkPort applies the checks that hold whoever the client is: never the
// proxy's own ports, and only allowed ports.
func (p *Policy) checkPort(port uint16) error {
	if err := preventLoop(port, p.ownPort); err != nil {
		return err
	}
	if p.allow.Len() > 0 && !p.allow.Contains(port) {
		return fmt.Errorf("port %d: %w", port, ErrPortNotAllowed)
	}
	return nil
}
