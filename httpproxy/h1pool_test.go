package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
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
	return &gatedDials{started: make(chan struct{}, 256), results: make(chan error, 256)}
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

// poll calls check until it reports done, failing with the state it
// last reported after 10 s.
func poll(t *testing.T, check func() (done bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		done, state := check()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(state)
		}
		time.Sleep(time.Millisecond)
	}
}

// wantIdle waits until p holds n idle conns: a connect that ended after
// its request was served puts its conn there.
func wantIdle(t *testing.T, p *connPool, n int) {
	t.Helper()
	poll(t, func() (bool, string) {
		got := p.idleLen()
		return got == n, fmt.Sprintf("%d idle conns, want %d", got, n)
	})
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
	poll(t, func() (bool, string) {
		p.mu.Lock()
		failures, waiting := p.failures, len(p.waiting)
		p.mu.Unlock()
		if waiting != 0 {
			t.Fatalf("%d requests in line, want none", waiting)
		}
		// The first failure was followed by a success.
		return failures == 1, fmt.Sprintf("%d failed connects in a row counted, want 1", failures)
	})
}

// A burst of requests with no conn idle starts minDialing connects; each
// new conn serves the first in line and lets one more connect start while
// the line lasts, so the connects under way double per connect time (as
// TCP's slow start), and the bound is back at minDialing once a conn
// finds nobody waiting.
func TestConnPoolDialsSlowStart(t *testing.T) {
	const requests = 40
	g := newGatedDials()
	p := newTestConnPool(t, g.dial)
	results := make([]<-chan getResult, requests)
	for i := range results {
		results[i] = goGet(t.Context(), p)
	}
	wantStarts := func(n int) {
		t.Helper()
		for range n {
			g.waitStarted(t)
		}
		select {
		case <-g.started:
			t.Fatalf("more than %d connects started", n)
		case <-time.After(50 * time.Millisecond):
		}
	}
	wantStarts(minDialing)
	// Round by round, every connect under way ends: each lets two start.
	underWay := minDialing
	for round := 0; underWay < 16; round++ {
		for range underWay {
			g.results <- nil
		}
		wantStarts(2 * underWay)
		underWay *= 2
	}
	served := 2*underWay - minDialing - underWay // conns made so far
	for range requests - served {
		g.results <- nil
	}
	for _, ch := range results {
		if r := wantGot(t, ch); r.err != nil {
			t.Fatal(r.err)
		}
	}
	wantStarts(requests - served - underWay) // one connect per request, no more
	p.mu.Lock()
	limit := p.dialLimit()
	p.mu.Unlock()
	if limit <= minDialing {
		t.Errorf("dial limit %d after a long line, want it grown past %d", limit, minDialing)
	}

	// A conn nobody waits for ends the burst.
	ctx, cancel := context.WithCancel(t.Context())
	left := goGet(ctx, p)
	g.waitStarted(t)
	cancel()
	wantGot(t, left)
	g.results <- nil
	wantIdle(t, p, 1)
	p.mu.Lock()
	limit = p.dialLimit()
	p.mu.Unlock()
	if limit != minDialing {
		t.Errorf("dial limit %d once a conn found nobody waiting, want %d", limit, minDialing)
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
	waitDials(t, p)
}

// closeIdle (a shutdown, Pools dropping the pool) ends the connects under
// way too, which no request waits for any more: otherwise one finishing
// after it would keep its goroutine for the dial timeout and its conn in
// the pool for the idle timeout, after the proxy stopped. Their failure
// says nothing of the upstream, and the pool dials again afterwards.
func TestConnPoolCloseIdleEndsDials(t *testing.T) {
	dialed := make(chan context.Context, 4)
	p := newTestConnPool(t, func(ctx context.Context) (net.Conn, error) {
		dialed <- ctx
		<-ctx.Done()
		return nil, fmt.Errorf("dial: %w", ctx.Err())
	})
	ctx, cancel := context.WithCancel(t.Context())
	left := goGet(ctx, p)
	var dialCtx context.Context
	select {
	case dialCtx = <-dialed:
	case <-time.After(10 * time.Second):
		t.Fatal("no connect began")
	}
	cancel() // the request goes away (a shutdown's grace period is over)
	if r := wantGot(t, left); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("get: %v, want context.Canceled", r.err)
	}
	p.closeIdle()
	select {
	case <-dialCtx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("closeIdle left the connect under way")
	}
	waitDials(t, p)
	p.mu.Lock()
	failures := p.failures
	p.mu.Unlock()
	if failures != 0 {
		t.Errorf("%d failed connects counted, want 0: closeIdle ended them", failures)
	}

	// The pool still serves: a later request dials with a live context.
	p.dial = func(ctx context.Context) (net.Conn, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c, peer := net.Pipe()
		_ = peer.Close()
		return c, nil
	}
	r := wantGot(t, goGet(t.Context(), p))
	if r.err != nil {
		t.Fatalf("get after closeIdle: %v", r.err)
	}
	_ = r.c.conn.Close()
}

// A conn whose connect ended after closeIdle, no request waiting for it, is
// closed rather than kept for the idle timeout.
func TestConnPoolCloseIdleDropsLateConn(t *testing.T) {
	g := newGatedDials()
	var conns []net.Conn
	p := newTestConnPool(t, func(ctx context.Context) (net.Conn, error) {
		c, err := g.dial(ctx) // ignores ctx, as a dial that just succeeded
		if c != nil {
			conns = append(conns, c)
		}
		return c, err
	})
	ctx, cancel := context.WithCancel(t.Context())
	left := goGet(ctx, p)
	g.waitStarted(t)
	cancel()
	wantGot(t, left)
	p.closeIdle()
	g.results <- nil
	waitDials(t, p)
	if n := p.idleLen(); n != 0 {
		t.Fatalf("%d idle conns after closeIdle, want 0", n)
	}
	if len(conns) != 1 {
		t.Fatalf("%d conns made, want 1", len(conns))
	}
	if _, err := conns[0].Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("the late conn: write %v, want it closed", err)
	}
}

// waitDials waits until p has no connect under way.
func waitDials(t *testing.T, p *connPool) {
	t.Helper()
	poll(t, func() (bool, string) {
		p.mu.Lock()
		n := p.dialing
		p.mu.Unlock()
		return n == 0, fmt.Sprintf("%d connects still under way", n)
	})
}

// countedConn counts its first Close.
type countedConn struct {
	net.Conn
	closes *atomic.Int64
	once   sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.closes.Add(1) })
	return c.Conn.Close()
}

// Requests coming, leaving and giving conns back at random, against
// connects that succeed, fail, are not attempted, and end by closeIdle:
// every request returns, no conn is lent to two requests at once, and
// every conn made is closed in the end (none is lost on the way).
func TestConnPoolChurn(t *testing.T) {
	var made, closes atomic.Int64
	notDialed := fmt.Errorf("queue full (%w)", ErrNotDialed)
	p := newTestConnPool(t, func(ctx context.Context) (net.Conn, error) {
		select {
		case <-time.After(time.Duration(rand.IntN(300)) * time.Microsecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		switch rand.IntN(10) {
		case 0:
			return nil, errors.New("refused")
		case 1:
			return nil, notDialed
		}
		c, peer := net.Pipe()
		_ = peer.Close()
		made.Add(1)
		return &countedConn{Conn: c, closes: &closes}, nil
	})
	p.maxIdle = 3
	p.backoff, p.maxBackoff = time.Millisecond, 2*time.Millisecond
	var lent sync.Map
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			for i := range 200 {
				ctx, cancel := context.WithCancel(t.Context())
				if rand.IntN(4) == 0 {
					time.AfterFunc(time.Duration(rand.IntN(200))*time.Microsecond, cancel)
				}
				if i%50 == 0 {
					p.closeIdle()
				}
				c, err := p.get(ctx)
				cancel()
				if err != nil {
					continue
				}
				if _, dup := lent.LoadOrStore(c, true); dup {
					t.Errorf("conn %p lent to two requests at once", c)
				}
				runtime.Gosched()
				lent.Delete(c)
				c.release(rand.IntN(5) != 0)
			}
		})
	}
	wg.Wait()
	waitDials(t, p)
	p.mu.Lock()
	waiting := len(p.waiting)
	p.mu.Unlock()
	if waiting != 0 {
		t.Errorf("%d requests still in line", waiting)
	}
	p.closeIdle()
	if made.Load() == 0 || closes.Load() != made.Load() {
		t.Errorf("%d conns made, %d closed", made.Load(), closes.Load())
	}
}

// A conn given back to the line puts the dial bound back at minDialing,
// and the next new conn does not grow it: the line is being served by
// conns coming back, which more connects would only slow.
func TestConnPoolGivenBackKeepsDialsBounded(t *testing.T) {
	g := newGatedDials()
	p := newTestConnPool(t, g.dial)
	limit := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.dialLimit()
	}
	first := goGet(t.Context(), p)
	g.waitStarted(t)
	g.results <- nil
	busy := wantGot(t, first)
	l0 := limit() // the first request waited for a new conn too

	const waiters = 16
	results := make([]<-chan getResult, waiters)
	for i := range results {
		results[i] = goGet(t.Context(), p)
	}
	for range l0 {
		g.waitStarted(t)
	}
	g.results <- nil // a new conn serves the line: the bound grows
	g.waitStarted(t)
	g.waitStarted(t)
	if l := limit(); l != l0+1 {
		t.Fatalf("dial limit %d after a new conn served the line, want %d", l, l0+1)
	}
	busy.c.release(true) // a conn given back serves the line
	if l := limit(); l != minDialing {
		t.Fatalf("dial limit %d after a conn given back served the line, want %d", l, minDialing)
	}
	g.results <- nil
	poll(t, func() (bool, string) {
		p.mu.Lock()
		w := len(p.waiting)
		p.mu.Unlock()
		return w == waiters-3, fmt.Sprintf("%d requests in line, want %d", w, waiters-3)
	})
	if l := limit(); l != minDialing {
		t.Fatalf("dial limit %d after a new conn following a conn given back, want %d", l, minDialing)
	}
	for range waiters {
		g.results <- nil
	}
	for _, ch := range results {
		if r := wantGot(t, ch); r.err != nil {
			t.Fatal(r.err)
		}
	}
}
