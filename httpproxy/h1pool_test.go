package httpproxy

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// gatedDials is a dial function whose connects each wait for a result
// the test sends, so a test decides when and how each one ends.
type gatedDials struct {
	started chan struct{} // one value per connect begun
	results chan error    // nil: the connect succeeds
}

func newGatedDials() *gatedDials {
	return &gatedDials{started: make(chan struct{}, 16), results: make(chan error, 16)}
}

func (g *gatedDials) dial(context.Context) (net.Conn, error) {
	g.started <- struct{}{}
	if err := <-g.results; err != nil {
		return nil, err
	}
	c, peer := net.Pipe()
	_ = peer.Close() // nothing is read from or written to the conns here
	return c, nil
}

// waitStarted waits for the next connect to begin.
func (g *gatedDials) waitStarted(t *testing.T) {
	t.Helper()
	select {
	case <-g.started:
	case <-time.After(10 * time.Second):
		t.Fatal("no connect began")
	}
}

func newTestConnPool(t *testing.T, dial func(context.Context) (net.Conn, error)) *connPool {
	t.Helper()
	p := &connPool{dial: dial, maxIdle: 8, idleTimeout: time.Minute, dialBackoff: newDialBackoff()}
	t.Cleanup(p.closeIdle)
	return p
}

type getResult struct {
	c   *UpstreamConn
	err error
}

// goGet calls p.get on a goroutine of its own.
func goGet(ctx context.Context, p *connPool) <-chan getResult {
	ch := make(chan getResult, 1)
	go func() {
		c, err := p.get(ctx)
		ch <- getResult{c, err}
	}()
	return ch
}

func wantGot(t *testing.T, ch <-chan getResult) getResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("get still waits")
		return getResult{}
	}
}

// wantIdle waits until p holds n idle conns: a connect that ended after
// its request was served puts its conn there.
func wantIdle(t *testing.T, p *connPool, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for p.idleLen() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d idle conns, want %d", p.idleLen(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A request that finds no idle conn takes the first one given back while
// a connect is under way, as net/http's Transport does; the conn that
// connect makes goes to the next request, or to the pool, and a request
// coming meanwhile waits for it rather than starting another. Before, each
// request of a burst waited for a handshake of its own: 50 keep-alive
// clients starting at once through the pair made about 100 connections
// and waited up to 150 ms.
func TestConnPoolWaitersShareDials(t *testing.T) {
	g := newGatedDials()
	p := newTestConnPool(t, g.dial)

	first := goGet(t.Context(), p)
	g.waitStarted(t)
	g.results <- nil
	busy := wantGot(t, first)
	if busy.err != nil {
		t.Fatal(busy.err)
	}

	second := goGet(t.Context(), p)
	g.waitStarted(t) // a connect for it, held
	busy.c.release(true)
	got := wantGot(t, second)
	if got.err != nil || got.c != busy.c {
		t.Fatalf("got %p, %v; want the conn given back (%p)", got.c, got.err, busy.c)
	}
	if !got.c.reused {
		t.Error("a conn given back is not marked reused: a request meeting it closed would not be sent again")
	}

	third := goGet(t.Context(), p)
	select {
	case <-g.started:
		t.Fatal("a request started a connect while one no request waited for was under way")
	case r := <-third:
		t.Fatalf("got %p, %v with no conn idle or connected", r.c, r.err)
	case <-time.After(50 * time.Millisecond):
	}
	g.results <- nil // the held connect ends: its conn is the third's
	if r := wantGot(t, third); r.err != nil || r.c == busy.c {
		t.Fatalf("got %p, %v; want the new conn", r.c, r.err)
	}
	wantIdle(t, p, 0)
}

// A request that goes away while waiting returns at once; the connect it
// started goes on and fills the pool, and a failed one does not reach a
// request it was not made for.
func TestConnPoolWaiterLeavesAndDialsEnd(t *testing.T) {
	tests := []struct {
		name     string
		result   error
		wantIdle int
	}{
		{name: "connect succeeds", wantIdle: 1},
		{name: "connect fails", result: errors.New("refused"), wantIdle: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newGatedDials()
			p := newTestConnPool(t, g.dial)
			ctx, cancel := context.WithCancel(t.Context())
			left := goGet(ctx, p)
			g.waitStarted(t)

			// Another request, waiting too: it must get its own
			// connect's result, not the first request's.
			other := goGet(t.Context(), p)
			g.waitStarted(t)

			cancel()
			if r := wantGot(t, left); !errors.Is(r.err, context.Canceled) {
				t.Fatalf("get after its context ended: %v, want context.Canceled", r.err)
			}
			g.results <- tc.result // the first connect ends
			if tc.result == nil {
				if r := wantGot(t, other); r.err != nil {
					t.Fatalf("the waiting request: %v, want the first connect's conn", r.err)
				}
				g.results <- nil
			} else {
				select {
				case r := <-other:
					t.Fatalf("the waiting request got %v from a connect made for another", r.err)
				case <-time.After(50 * time.Millisecond):
				}
				g.results <- nil
				if r := wantGot(t, other); r.err != nil {
					t.Fatalf("the waiting request: %v, want its own connect's conn", r.err)
				}
			}
			wantIdle(t, p, tc.wantIdle)
		})
	}
}

// A failed connect goes to its own request when that request still
// waits, and counts toward the backoff either way.
func TestConnPoolDialFailure(t *testing.T) {
	g := newGatedDials()
	p := newTestConnPool(t, g.dial)
	refused := errors.New("refused")

	r := goGet(t.Context(), p)
	g.waitStarted(t)
	g.results <- refused
	if got := wantGot(t, r); !errors.Is(got.err, refused) {
		t.Fatalf("get: %v, want its connect's error", got.err)
	}

	// Served by a conn given back, the request is gone when its connect
	// fails: nobody hears of it but the backoff.
	first := goGet(t.Context(), p)
	g.waitStarted(t)
	g.results <- nil
	busy := wantGot(t, first)
	second := goGet(t.Context(), p)
	g.waitStarted(t)
	busy.c.release(true)
	if got := wantGot(t, second); got.err != nil {
		t.Fatal(got.err)
	}
	g.results <- refused
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		failures, waiting := p.failures, len(p.waiting)
		p.mu.Unlock()
		if waiting != 0 {
			t.Fatalf("%d requests in line, want none", waiting)
		}
		if failures == 1 { // the first failure was followed by a success
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d failed connects in a row counted, want 1", failures)
		}
		time.Sleep(time.Millisecond)
	}
}

// A burst of requests with no conn idle starts at most maxDialing
// connects; each conn serves the first in line, and the line keeps that
// many connects going while it is longer.
func TestConnPoolBoundsDials(t *testing.T) {
	const requests = 10
	g := newGatedDials()
	p := newTestConnPool(t, g.dial)
	results := make([]<-chan getResult, requests)
	for i := range results {
		results[i] = goGet(t.Context(), p)
	}
	for range maxDialing {
		g.waitStarted(t)
	}
	select {
	case <-g.started:
		t.Fatalf("more than %d connects at once", maxDialing)
	case <-time.After(50 * time.Millisecond):
	}
	g.results <- nil
	g.waitStarted(t) // the line is still longer than the connects
	for range requests - 1 {
		g.results <- nil
	}
	for _, ch := range results {
		if r := wantGot(t, ch); r.err != nil {
			t.Fatal(r.err)
		}
	}
	for range requests - maxDialing - 1 {
		g.waitStarted(t)
	}
	if n := len(g.started); n != 0 {
		t.Errorf("%d connects more than requests", n)
	}
}

// Against an upstream that refuses, each failed connect fails one request
// in line, and once the backoff starts the rest fail at once with
// ErrDialBackoff instead of waiting for connects that would fail too.
func TestConnPoolDialFailuresFailTheLine(t *testing.T) {
	const requests = 10
	g := newGatedDials()
	p := newTestConnPool(t, g.dial)
	p.backoff, p.maxBackoff = time.Hour, time.Hour
	results := make([]<-chan getResult, requests)
	for i := range results {
		results[i] = goGet(t.Context(), p)
	}
	refused := errors.New("refused")
	for range dialBackoffAfter {
		g.waitStarted(t)
		g.results <- refused
	}
	var gotRefused, gotBackoff int
	for _, ch := range results {
		switch r := wantGot(t, ch); {
		case errors.Is(r.err, ErrDialBackoff):
			gotBackoff++
		case errors.Is(r.err, refused):
			gotRefused++
		default:
			t.Errorf("got %p, %v; want a failure", r.c, r.err)
		}
	}
	if gotRefused != dialBackoffAfter || gotBackoff != requests-dialBackoffAfter {
		t.Errorf("%d requests failed with the connect's error and %d with the backoff; want %d and %d",
			gotRefused, gotBackoff, dialBackoffAfter, requests-dialBackoffAfter)
	}
	// End the connects still under way.
	p.mu.Lock()
	n := p.dialing
	p.mu.Unlock()
	for range n {
		g.results <- refused
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		n = p.dialing
		p.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connects still under way", n)
		}
		time.Sleep(time.Millisecond)
	}
}
