package httpproxy

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// A pool is shared by every Get of its key and dropped once unused for
// PoolIdleAfter; pools in use stay.
func TestPoolsDropUnused(t *testing.T) {
	var ps Pools[string]
	defer ps.CloseIdle()
	created := 0
	create := func() *http.Transport { created++; return &http.Transport{} }
	t0 := time.Unix(1_000_000, 0)

	a := ps.Get("a", t0, create)
	ps.Get("b", t0, create)
	if got := ps.Get("a", t0.Add(PoolIdleAfter/2), create); got != a {
		t.Error("a second Get of the same key got a new pool")
	}
	if ps.Len() != 2 || created != 2 {
		t.Fatalf("%d pools, %d created; want 2, 2", ps.Len(), created)
	}
	// Past the limit for b, not for a.
	ps.Get("c", t0.Add(PoolIdleAfter+time.Second), create)
	if n := ps.Len(); n != 2 {
		t.Errorf("%d pools after the sweep, want 2 (a and c)", n)
	}
	if got := ps.Get("a", t0.Add(PoolIdleAfter+2*time.Second), create); got != a {
		t.Error("a pool in use was dropped")
	}
	if ps.Get("b", t0.Add(PoolIdleAfter+3*time.Second), create); created != 4 {
		t.Errorf("%d pools created, want 4 (b again after it was dropped)", created)
	}
}

// A pool that requests keep using stays, although no new client
// connection has asked for it in a long while.
func TestPoolsKeepPoolsInUse(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer app.Close()
	var ps Pools[string]
	defer ps.CloseIdle()
	create := func() *http.Transport { return &http.Transport{} }
	now := time.Now()
	long := now.Add(-PoolIdleAfter - time.Minute)

	busy := ps.Get("busy", long, create)
	ps.Get("unused", long, create)
	req, err := http.NewRequest(http.MethodGet, app.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := busy.RoundTrip(req) // a request, now, on a connection made long ago
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	ps.Get("new", now, create) // sweeps
	if n := ps.Len(); n != 2 {
		t.Errorf("%d pools after the sweep, want 2 (busy and new)", n)
	}
	if ps.Get("busy", now, create) != busy {
		t.Error("the pool in use was dropped")
	}
}
