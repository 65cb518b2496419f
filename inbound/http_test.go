package inbound

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/seed722d2a70/meshproxy/internal/header"
)

// Pools to the workload are shared by a peer's connections to a port with
// one protocol, and by nothing else: a pooled connection's tcp_* labels
// name the peer it was opened for.
func TestWorkloadPools(t *testing.T) {
	p := &Proxy{} // only its dialer would be used, and nothing dials here
	defer p.workloads.CloseIdle()
	a := peer{ID: spiffeid.RequireFromString("spiffe://t/a")}
	b := peer{ID: spiffeid.RequireFromString("spiffe://t/b")}
	get := func(addr string, pr peer, session header.SessionProtocol) any {
		return p.workloads.get(p, addr, pr, session)
	}

	first := get("127.0.0.1:80", a, header.HTTP1)
	if get("127.0.0.1:80", a, header.HTTP1) != first {
		t.Error("the same peer, port and protocol: want the same pool")
	}
	for name, other := range map[string]any{
		"another peer":     get("127.0.0.1:80", b, header.HTTP1),
		"another port":     get("127.0.0.1:81", a, header.HTTP1),
		"another protocol": get("127.0.0.1:80", a, header.HTTP2),
	} {
		if other == first {
			t.Errorf("%s: want its own pool", name)
		}
	}
	if n := p.workloads.Len(); n != 4 {
		t.Errorf("%d pools, want 4", n)
	}
}
