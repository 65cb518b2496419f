package outbound

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/seed722d2a70/meshproxy/destination"
	pb "github.com/seed722d2a70/meshproxy/destination/destinationpb"
	"github.com/seed722d2a70/meshproxy/internal/header"
	"github.com/seed722d2a70/meshproxy/internal/tcptest"
)

// closedAddr is a loopback address where nothing listens: connects fail.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// serveHTTPApp runs an HTTP/1.1 server answering "ok" on loopback, for both
// protocols' prior knowledge: HTTP/1.1 and h2c.
func serveHTTPApp(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// resolvedRoute is the route of a Service whose endpoints (unmeshed, on
// loopback) are addrs.
func resolvedRoute(t *testing.T, p *Proxy, addrs ...string) Route {
	t.Helper()
	eps := map[string]*pb.Endpoint{}
	for _, a := range addrs {
		eps[a] = &pb.Endpoint{Address: a}
	}
	s := destination.State{Kind: pb.Kind_KIND_SERVICE, Service: &pb.Service{Name: "web", Namespace: "shop", Port: 80},
		Endpoints: eps, Version: 1}
	r, err := p.resolved(Target{Host: "10.96.0.10", Port: 80}, destination.Fixed(s), s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A request whose endpoint fails to connect goes to another endpoint, for
// HTTP/1.1 and HTTP/2 alike, when it has no body to send again; one with a
// body fails with the connect error rather than be sent twice.
func TestBalancedRequestsMoveOnFromEndpointsThatFailToConnect(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	p := New(Config{Metrics: m})
	defer func() { _ = p.Shutdown(t.Context()) }()
	dead, live := closedAddr(t), serveHTTPApp(t)

	for _, session := range []header.SessionProtocol{header.HTTP1, header.HTTP2} {
		tr := &balancedTransport{p: p, route: resolvedRoute(t, p, dead, live), session: session}
		for i := range 20 {
			req, _ := http.NewRequest(http.MethodGet, "http://web.shop/", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatalf("session %v, GET %d: %v", session, i, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "ok" {
				t.Fatalf("session %v, GET %d: %q", session, i, body)
			}
		}
	}
	if n := testutil.ToFloat64(m.choices.WithLabelValues("failed")); n == 0 {
		t.Error("no failed connect counted: the dead endpoint was never tried, so this proves nothing")
	}

	// A body: a request whose first endpoint fails to connect is not sent
	// to the other, the connect error comes back. Each try has a fresh
	// balancer, whose first choice is either endpoint.
	var received atomic.Int32
	counting := tcptest.Serve(t, func(c net.Conn) {
		defer c.Close()
		r, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		received.Add(1)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	})
	failures, successes := 0, 0
	for try := 0; try < 50 && failures == 0; try++ {
		tr := &balancedTransport{p: p, route: resolvedRoute(t, p, dead, counting), session: header.HTTP1}
		req, _ := http.NewRequest(http.MethodPost, "http://web.shop/", strings.NewReader("once"))
		resp, err := tr.RoundTrip(req)
		if err == nil {
			successes++
			resp.Body.Close()
			continue
		}
		var de *dialError
		if !errors.As(err, &de) {
			t.Fatalf("POST: %v, want the connect error", err)
		}
		failures++
	}
	if failures == 0 {
		t.Fatal("no POST failed in 50 tries: the dead endpoint was never chosen first, or a POST whose connect failed was sent to the other")
	}
	if n := int(received.Load()); n != successes {
		t.Errorf("the live endpoint got %d POSTs for %d that succeeded: a failed one was sent again", n, successes)
	}
}

// A request's response is the endpoint's work until its body is read to
// the end or closed.
func TestBalancedResponseHoldsItsEndpointUntilItsBodyEnds(t *testing.T) {
	p := New(Config{})
	defer func() { _ = p.Shutdown(t.Context()) }()
	addr := tcptest.Serve(t, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 4096)
		_, _ = c.Read(buf)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
	})
	r := resolvedRoute(t, p, addr)
	tr := &balancedTransport{p: p, route: r, session: header.HTTP1}
	req, _ := http.NewRequest(http.MethodGet, "http://web.shop/", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	pending := func() int {
		h, _ := r.Endpoints.bal.Pick(nil)
		defer h.Done()
		return h.Pending() - 1 // not counting this probe
	}
	if n := pending(); n != 1 {
		t.Errorf("work on the endpoint while the body is unread: %d, want 1", n)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if n := pending(); n != 0 {
		t.Errorf("work on the endpoint after the body: %d, want 0", n)
	}
}

// A set whose watch the resolver stopped (its connection idle for long)
// resolves again at its next choice, and follows the new watch.
func TestEndpointSetResolvesAgainWhenItsWatchStops(t *testing.T) {
	live := serveHTTPApp(t)
	state := func(addr string) destination.State {
		return destination.State{Kind: pb.Kind_KIND_SERVICE, Endpoints: map[string]*pb.Endpoint{addr: {Address: addr}}, Version: 1}
	}
	stopped := destination.Fixed(state(closedAddr(t))) // a fixed watch is done at once
	fresh := destination.Fixed(state(live))
	calls := 0
	var ss endpointSets
	set := ss.get("10.96.0.10:80", stopped, func() (*destination.Watch, bool) { calls++; return fresh, true })
	h, ep, ok := set.pick(map[string]bool{})
	if !ok || ep.Address != live {
		t.Fatalf("picked %v, want the new watch's endpoint %s", ep, live)
	}
	h.Done()
	if calls == 0 || !set.follows(fresh) {
		t.Errorf("resolved again %d times; follows the new watch: %v", calls, set.follows(fresh))
	}
}

// A connection that times out queued for a handshake slot in this proxy
// fails once, within one dial timeout: no mark against the endpoint (it
// refused nothing), and no other endpoint tried with a fresh timeout only
// to queue again.
func TestBalancedDialQueueTimeoutIsNotTheEndpointsFault(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	const dialTimeout = 200 * time.Millisecond
	p := New(Config{Metrics: m, MaxHandshakesPerDestination: 1, DialTimeout: dialTimeout})
	defer func() { _ = p.Shutdown(t.Context()) }()
	a, b := serveHTTPApp(t), serveHTTPApp(t)
	for _, addr := range []string{a, b} {
		release, err := p.slots.acquire(t.Context(), addr)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
	}
	start := time.Now()
	_, _, _, err = p.dialBalanced(t.Context(), resolvedRoute(t, p, a, b))
	if !errors.Is(err, ErrHandshakeQueueTimeout) {
		t.Fatalf("dial with every slot taken: %v, want ErrHandshakeQueueTimeout", err)
	}
	if d := time.Since(start); d > dialTimeout*3/2 {
		t.Errorf("failing took %v, want one dial timeout (%v)", d, dialTimeout)
	}
	if n := testutil.ToFloat64(m.choices.WithLabelValues("failed")); n != 0 {
		t.Errorf("outbound_endpoint_choices_total{failed} = %v, want 0: the endpoint was marked failed", n)
	}
}
