package destination

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Past its bound, the resolver stops the least recently used watch.
func TestResolverEvictsTheLeastRecentlyUsedWatch(t *testing.T) {
	// Nothing listens: the watches retry in the background, which is all
	// this test needs of them.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := NewClient(addr, &tls.Config{MinVersion: tls.VersionTLS13}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := NewResolverMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r := NewResolver(c, time.Millisecond, m)
	defer r.Close()
	r.maxWatches = 3

	first := r.watch("10.0.0.1:80").w
	time.Sleep(time.Millisecond)
	second := r.watch("10.0.0.2:80").w
	time.Sleep(time.Millisecond)
	r.watch("10.0.0.3:80")
	time.Sleep(time.Millisecond)
	first.State() // in use again: 10.0.0.2 is now the oldest
	time.Sleep(time.Millisecond)
	r.watch("10.0.0.4:80")

	r.mu.Lock()
	_, kept1 := r.watches["10.0.0.1:80"]
	_, kept2 := r.watches["10.0.0.2:80"]
	n := len(r.watches)
	r.mu.Unlock()
	if n != 3 || !kept1 || kept2 {
		t.Errorf("after a fourth address: %d watches, 10.0.0.1 kept %v, 10.0.0.2 kept %v; want 3, the read one kept, the oldest gone", n, kept1, kept2)
	}
	if got := testutil.ToFloat64(m.evictions); got != 1 {
		t.Errorf("evictions = %v, want 1", got)
	}
	select {
	case <-second.Done():
	case <-time.After(5 * time.Second):
		t.Error("the evicted watch did not stop")
	}
}
