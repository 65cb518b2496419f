package inbound

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/seed722d2a70/meshproxy/internal/header"
)

// Pools to the workload are shared by a peer's connections to a port and
// dropped once unused for poolIdleAfter, so they do not pile up over the
// proxy's life.
func TestWorkloadPoolsDropUnused(t *testing.T) {
	p := &Proxy{} // only its dialer would be used, and nothing dials here
	defer p.workloads.closeIdle()
	a := peer{ID: spiffeid.RequireFromString("spiffe://t/a")}
	b := peer{ID: spiffeid.RequireFromString("spiffe://t/b")}
	t0 := time.Unix(1_000_000, 0)
	w := &p.workloads

	ta := w.getAt(p, "127.0.0.1:80", a, header.HTTP1, t0)
	w.getAt(p, "127.0.0.1:80", b, header.HTTP1, t0)
	w.getAt(p, "127.0.0.1:81", a, header.HTTP1, t0)
	if got := w.getAt(p, "127.0.0.1:80", a, header.HTTP1, t0.Add(poolIdleAfter/2)); got != ta {
		t.Error("a second connection of the same peer to the same port got a new pool")
	}
	if n := w.len(); n != 3 {
		t.Fatalf("%d pools, want 3", n)
	}
	// Past the idle limit for the pools not used since t0, not for a's
	// pool to port 80.
	w.getAt(p, "127.0.0.1:82", a, header.HTTP1, t0.Add(poolIdleAfter+time.Second))
	if n := w.len(); n != 2 {
		t.Errorf("%d pools after the sweep, want 2 (a to 80, a to 82)", n)
	}
	if got := w.getAt(p, "127.0.0.1:80", a, header.HTTP1, t0.Add(poolIdleAfter+2*time.Second)); got != ta {
		t.Error("a pool in use was dropped")
	}
}
