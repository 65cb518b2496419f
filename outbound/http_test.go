package outbound

import (
	"crypto/tls"
	"testing"

	"github.com/seed722d2a70/meshproxy/internal/header"
)

// Upstream pools are shared per destination, port, protocol and TLS
// configuration. Two configurations for the same address (a named
// destination and a meshed network both reaching one pod, or a table
// reload) each keep their own pool, without evicting the other's.
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
	if u.Len() != 3 {
		t.Fatalf("%d pools, want 3", u.Len())
	}
	reloaded := route
	reloaded.TLS = newTLS
	b := u.get(p, reloaded, header.HTTP1)
	if b == a {
		t.Error("new TLS configuration: want a new pool")
	}
	for range 3 {
		if u.get(p, route, header.HTTP1) != a || u.get(p, reloaded, header.HTTP1) != b {
			t.Fatal("two TLS configurations for one address evicted each other's pools")
		}
	}
}
