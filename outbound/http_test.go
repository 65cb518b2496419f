package outbound

import (
	"crypto/tls"
	"testing"

	"github.com/seed722d2a70/meshproxy/internal/header"
)

// Upstream pools are shared per destination, port, protocol and TLS
// configuration, and a new TLS configuration for the same destination (a
// table reload) replaces the old pool instead of piling up.
func TestUpstreamPools(t *testing.T) {
	p := New(Config{})
	defer func() { _ = p.Shutdown(t.Context()) }()
	var u upstreams
	oldTLS, newTLS := &tls.Config{}, &tls.Config{}
	route := Route{Target: Target{Host: "app", Port: 80}, Meshed: true, DialAddr: "10.0.0.1:4143", TLS: oldTLS}

	a := u.get(p, route, header.HTTP1)
	if u.get(p, route, header.HTTP1) != a {
		t.Error("same route and protocol: want the same pool")
	}
	if u.get(p, route, header.HTTP2) == a {
		t.Error("HTTP/2: want its own pool")
	}
	other := route
	other.Target.Port = 81
	if u.get(p, other, header.HTTP1) == a {
		t.Error("another port: want its own pool")
	}
	if len(u.m) != 3 {
		t.Fatalf("%d pools, want 3", len(u.m))
	}
	reloaded := route
	reloaded.TLS = newTLS
	if u.get(p, reloaded, header.HTTP1) == a {
		t.Error("new TLS configuration: want a new pool")
	}
	if len(u.m) != 3 {
		t.Errorf("%d pools after the reload, want 3 (the old one replaced)", len(u.m))
	}
}
