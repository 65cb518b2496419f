package inbound

import (
	"crypto/x509"
	"errors"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/ports"
)

// exactIDs is a stand-in for identity.ParseAuthorizer that understands exact
// IDs only, with empty meaning the mesh.local trust domain.
func exactIDs(ids []string) (tlsconfig.Authorizer, error) {
	if len(ids) == 0 {
		return tlsconfig.AuthorizeMemberOf(spiffeid.RequireTrustDomainFromString("mesh.local")), nil
	}
	var parsed []spiffeid.ID
	for _, s := range ids {
		id, err := spiffeid.FromString(s)
		if err != nil {
			return nil, err
		}
		parsed = append(parsed, id)
	}
	return tlsconfig.AuthorizeOneOf(parsed...), nil
}

func TestPolicyCheck(t *testing.T) {
	cfg := config.Inbound{
		Ports: []config.PortPolicy{
			{Ports: ports.MustParse("6379"), Authorize: []string{"spiffe://mesh.local/web"}, Protocol: "opaque"},
			{Ports: ports.MustParse("8443"), Protocol: "TLS"},
		},
	}
	p, err := NewPolicy(cfg, ports.MustParse("4143,4140,4191"), exactIDs)
	if err != nil {
		t.Fatal(err)
	}
	web := spiffeid.RequireFromString("spiffe://mesh.local/web")
	batch := spiffeid.RequireFromString("spiffe://mesh.local/batch")
	foreign := spiffeid.RequireFromString("spiffe://other.org/web")
	tests := []struct {
		name     string
		port     uint16
		peer     spiffeid.ID
		wantErr  error
		wantProt Protocol
	}{
		{"listed peer on restricted port", 6379, web, nil, ProtocolOpaque},
		{"other peer on restricted port", 6379, batch, ErrUnauthorized, 0},
		{"trust domain member on default port", 8080, batch, nil, ProtocolUnknown},
		{"foreign trust domain", 8080, foreign, ErrUnauthorized, 0},
		{"TLS hint", 8443, batch, nil, ProtocolTLS},
		{"inbound port itself", 4143, web, ErrLoop, 0},
		{"admin port", 4191, web, ErrLoop, 0},
		{"outbound port", 4140, web, ErrLoop, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rule, err := p.Check(tt.port, tt.peer, [][]*x509.Certificate{})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Check error = %v, want %v", err, tt.wantErr)
			}
			if err == nil && rule.Protocol != tt.wantProt {
				t.Errorf("protocol = %v, want %v", rule.Protocol, tt.wantProt)
			}
		})
	}
}

func TestPolicyAllowList(t *testing.T) {
	p, err := NewPolicy(config.Inbound{AllowPorts: ports.MustParse("80,6379")}, ports.Set{}, exactIDs)
	if err != nil {
		t.Fatal(err)
	}
	peer := spiffeid.RequireFromString("spiffe://mesh.local/web")
	if _, err := p.Check(6379, peer, nil); err != nil {
		t.Errorf("allowed port refused: %v", err)
	}
	if _, err := p.Check(22, peer, nil); !errors.Is(err, ErrPortNotAllowed) {
		t.Errorf("port 22: err = %v, want ErrPortNotAllowed", err)
	}
}

func TestNewPolicyErrors(t *testing.T) {
	for _, cfg := range []config.Inbound{
		{Authorize: []string{"not a spiffe id"}},
		{Ports: []config.PortPolicy{{Ports: ports.MustParse("1"), Authorize: []string{"spiffe://"}}}},
		{Ports: []config.PortPolicy{{Ports: ports.MustParse("1"), Protocol: "SMTP"}}},
	} {
		if _, err := NewPolicy(cfg, ports.Set{}, exactIDs); err == nil {
			t.Errorf("NewPolicy(%+v) succeeded", cfg)
		}
	}
}

// Plaintext clients (no mesh identity) pass by default, like Linkerd's
// all-unauthenticated default policy, unless the port or the whole proxy
// requires identity; the port checks apply to them as to everybody.
func TestPolicyCheckUnauthenticated(t *testing.T) {
	own := ports.MustParse("4140,4143,4191")
	tests := []struct {
		name    string
		cfg     config.Inbound
		port    uint16
		wantErr error
	}{
		{"allowed by default", config.Inbound{}, 8080, nil},
		{"port requiring identity", config.Inbound{RequireIdentityPorts: ports.MustParse("6379")}, 6379, ErrIdentityRequired},
		{"other port when one requires identity", config.Inbound{RequireIdentityPorts: ports.MustParse("6379")}, 8080, nil},
		{"identity required everywhere", config.Inbound{RequireIdentity: true}, 8080, ErrIdentityRequired},
		{"proxy's own port", config.Inbound{}, 4140, ErrLoop},
		{"port outside the allow-list", config.Inbound{AllowPorts: ports.MustParse("80")}, 8080, ErrPortNotAllowed},
		{"opaque hint kept", config.Inbound{Ports: []config.PortPolicy{{Ports: ports.MustParse("6379"), Protocol: "opaque"}}}, 6379, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPolicy(tt.cfg, own, exactIDs)
			if err != nil {
				t.Fatal(err)
			}
			rule, err := p.CheckUnauthenticated(tt.port)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("CheckUnauthenticated(%d) = %v, want %v", tt.port, err, tt.wantErr)
			}
			if err == nil && len(tt.cfg.Ports) > 0 && rule.Protocol != ProtocolOpaque {
				t.Errorf("protocol = %v, want the port's hint", rule.Protocol)
			}
		})
	}
}
