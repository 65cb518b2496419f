package httpproxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/seed722d2a70/meshproxy/internal/tcptest"
	"github.com/seed722d2a70/meshproxy/metrics"
)

// A Server forwards the requests of a handed-over connection through the
// connection's transport, counts them, and, once shut down, ends served
// connections and takes no more.
func TestServerForwardsCountsAndShutsDown(t *testing.T) {
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	appSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Grpc-Status", "0") // read from headers when there are no trailers
		_, _ = io.WriteString(w, "hi "+r.Host)
	})}
	go func() { _ = appSrv.Serve(app) }()
	defer appSrv.Close()

	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Direction: "inbound", Metrics: m})
	tr := NewTransport(TransportConfig{Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", app.Addr().String())
	}})
	defer tr.CloseIdleConnections()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.ServeConn(context.Background(), c, &Conn{Transport: tr, Upstream: app.Addr().String(), Labels: Labels{Direction: "inbound", TLS: "true", ClientID: "spiffe://t/c"}})
	}()

	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", ln.Addr().String())
	}}}
	defer client.CloseIdleConnections()
	for range 3 {
		resp, err := client.Get("http://svc.example/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "hi svc.example" {
			t.Fatalf("body %q", body)
		}
	}
	wantRequestTotal(t, reg, `request_total{authority="svc.example",client_id="spiffe://t/c",direction="inbound",dst_namespace="",dst_service="",server_id="",target_addr="",tls="true"} 3`)
	if n := testutil.ToFloat64(m.responses.WithLabelValues("inbound", "svc.example", "true", "", "spiffe://t/c", "", "", "", "200", "0", "success")); n != 3 {
		t.Errorf("successful responses with grpc_status 0 = %v, want 3", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	<-served // the idle keep-alive connection was closed
	a, b := net.Pipe()
	defer b.Close()
	s.ServeConn(context.Background(), a, &Conn{}) // returns at once, closing a
	if _, err := b.Read(make([]byte, 1)); err != io.EOF && err != io.ErrClosedPipe {
		t.Errorf("a conn given after Shutdown was not closed: %v", err)
	}
}

// serveOne serves, with s and info, the connections made to the address it
// returns, until the test ends.
func serveOne(t *testing.T, s *Server, info *Conn) string {
	t.Helper()
	return tcptest.Serve(t, func(c net.Conn) { s.ServeConn(t.Context(), c, info) })
}

// newServer returns a running Server counting into fresh metrics, shut
// down when the test ends.
func newServer(t *testing.T, direction string) (*Server, *Metrics, *prometheus.Registry) {
	t.Helper()
	return startServer(t, Config{Direction: direction})
}

// startServer is newServer with more of the config: cfg.Metrics is
// replaced.
func startServer(t *testing.T, cfg Config) (*Server, *Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Metrics = m
	s := New(cfg)
	t.Cleanup(func() {
		// Bounded, so that a handler stuck by a regression fails its
		// test rather than hanging it.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s, m, reg
}

// wantRequestTotal checks that reg's request_total is exactly series.
func wantRequestTotal(t *testing.T, reg *prometheus.Registry, series string) {
	t.Helper()
	want := "# HELP request_total Total count of HTTP requests.\n# TYPE request_total counter\n" + series + "\n"
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "request_total"); err != nil {
		t.Error(err)
	}
}

// waitForCount waits until c counts want: exchanges are counted when their
// handler returns, a little after the client has its answer.
func waitForCount(t *testing.T, c prometheus.Collector, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(c) != want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// exchangeRaw sends req to addr and reads until the server closes, for at
// most 5 s.
func exchangeRaw(t *testing.T, addr, req string) ([]byte, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		return nil, err
	}
	return io.ReadAll(c)
}

func dialTo(addr string) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

// A response whose body the upstream cuts off is counted as a failure,
// although its status was 200: the client got a truncated answer.
func TestResponseCutShortIsFailure(t *testing.T) {
	app := tcptest.Serve(t, func(c net.Conn) {
		defer c.Close()
		_, _ = c.Read(make([]byte, 4096))
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial")
	})
	s, m, _ := newServer(t, "outbound")
	tr := NewTransport(TransportConfig{Dial: dialTo(app)})
	t.Cleanup(tr.CloseIdleConnections)
	addr := serveOne(t, s, &Conn{Transport: tr, Upstream: app, Labels: Labels{Direction: "outbound", TLS: "true"}})

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	if got, _ := io.ReadAll(c); len(got) >= 100000 {
		t.Fatalf("client got the whole body (%d bytes)", len(got))
	}
	failed := m.responses.WithLabelValues("outbound", "svc", "true", "", "", "", "", "", "200", "", "failure")
	waitForCount(t, failed, 1)
	if n := testutil.ToFloat64(failed); n != 1 {
		t.Errorf("failed responses = %v, want 1", n)
	}
	if n := testutil.ToFloat64(m.responses.WithLabelValues("outbound", "svc", "true", "", "", "", "", "", "200", "", "success")); n != 0 {
		t.Errorf("successful responses = %v, want 0", n)
	}
}

// A CONNECT whose upstream never answers does not outlive its client: the
// handler gives up and closes the upstream conn when the client leaves.
func TestConnectSilentUpstreamClientLeaves(t *testing.T) {
	upClosed := make(chan struct{})
	app := tcptest.Serve(t, func(c net.Conn) {
		defer close(upClosed)
		defer c.Close()
		_, _ = io.Copy(io.Discard, c) // reads the CONNECT, never answers
	})
	s, _, _ := newServer(t, "outbound")
	addr := serveOne(t, s, &Conn{Upstream: app, Tunnel: dialTo(app), Labels: Labels{Direction: "outbound"}})

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
	time.Sleep(100 * time.Millisecond) // the CONNECT reaches the upstream
	_ = c.Close()
	select {
	case <-upClosed:
	case <-time.After(5 * time.Second):
		t.Fatal("the client left 5s ago and the upstream conn is still open")
	}
}

// A refused client gets one 403, under no authority label of its choosing,
// and then the connection is closed: it cannot hold it open by asking again.
func TestRefusalAnswersOnceAndCloses(t *testing.T) {
	s, m, reg := newServer(t, "inbound")
	addr := serveOne(t, s, &Conn{Refuse: "unauthorized", Labels: Labels{Direction: "inbound", TLS: "true", ClientID: "spiffe://t/x"}})

	got, err := exchangeRaw(t, addr, "GET / HTTP/1.1\r\nHost: a.example\r\n\r\nGET / HTTP/1.1\r\nHost: b.example\r\n\r\n")
	if err != nil {
		t.Fatalf("connection not closed after the refusal: %v", err)
	}
	if n := strings.Count(string(got), "HTTP/1.1 403"); n != 1 {
		t.Errorf("got %d 403 answers, want 1:\n%s", n, got)
	}
	waitForCount(t, m.requests.WithLabelValues("inbound", "", "true", "", "spiffe://t/x", "", "", ""), 1)
	wantRequestTotal(t, reg, `request_total{authority="",client_id="spiffe://t/x",direction="inbound",dst_namespace="",dst_service="",server_id="",target_addr="",tls="true"} 1`)
}

// The authority label takes at most MaxAuthorities values, case folded;
// the rest are counted as metrics.OtherValue.
func TestAuthorityLabelBounded(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	host := func(i int) string { return "h" + strconv.Itoa(i) + ".example:80" }
	for i := range MaxAuthorities {
		if got := m.authority(host(i)); got != host(i) {
			t.Fatalf("authority(%q) = %q", host(i), got)
		}
	}
	tests := []struct{ host, want string }{
		{"new.example", metrics.OtherValue},
		{host(7), host(7)},
		{strings.ToUpper(host(7)), host(7)},
		{"NEW.example", metrics.OtherValue},
	}
	for _, tt := range tests {
		if got := m.authority(tt.host); got != tt.want {
			t.Errorf("authority(%q) = %q, want %q", tt.host, got, tt.want)
		}
	}
}

// An authority longer than any host name is counted as metrics.OtherValue
// and takes none of the MaxAuthorities values: the label's values are
// bounded in length as well as in number.
func TestAuthorityLabelLengthBounded(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	longest := strings.Repeat("a", 253) + ":65535"
	tests := []struct{ host, want string }{
		{longest, longest},
		{"b" + longest, metrics.OtherValue},
		{strings.Repeat("c", 64<<10), metrics.OtherValue},
		{strings.Repeat("D", 1<<20), metrics.OtherValue},
	}
	for _, tt := range tests {
		if got := m.authority(tt.host); got != tt.want {
			t.Errorf("authority of a %d-byte host = %.20q (%d bytes), want %.20q", len(tt.host), got, len(got), tt.want)
		}
	}
	for i := range MaxAuthorities - 1 { // longest took one
		if h := "h" + strconv.Itoa(i); m.authority(h) != h {
			t.Fatalf("authority %d of %d counted as %q: the long hosts took values", i+2, MaxAuthorities, metrics.OtherValue)
		}
	}
}

// Through the relay too: a client's 60 KiB Host is counted as
// metrics.OtherValue, not kept as a label value.
func TestRelayLongHostNotALabel(t *testing.T) {
	app, _ := scriptedApp(t, func(*http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false
	})
	r := startRelay(t, app, TransportConfig{})
	c, br := clientConn(t, r.addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+strings.Repeat("x", 60<<10)+"\r\n\r\n")
	if resp, _ := readResponse(t, br, "GET"); resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	other := r.m.requests.WithLabelValues("outbound", metrics.OtherValue, "true", "", "", "", "", "")
	waitForCount(t, other, 1)
	if got := testutil.ToFloat64(other); got != 1 {
		t.Errorf("%v requests under authority=%q, want 1", got, metrics.OtherValue)
	}
	if n := testutil.CollectAndCount(r.m.requests); n != 1 {
		t.Errorf("%d request_total series, want 1 (%q)", n, metrics.OtherValue)
	}
}

// The request metrics' target_addr is bounded like authority: a pod that
// dials ever new destinations does not grow series without end.
func TestTargetAddrLabelBounded(t *testing.T) {
	_, m, _ := newServer(t, "outbound")
	for i := range metrics.MaxTargetAddrs + 50 {
		l := Labels{Direction: "outbound", Authority: "svc", TLS: "true", TargetAddr: "10.0.0.1:" + strconv.Itoa(i+1)}
		m.record(l, &exchange{status: 200})
	}
	if n := testutil.CollectAndCount(m.requests); n != metrics.MaxTargetAddrs+1 {
		t.Errorf("%d request_total series, want %d and one for %q", n, metrics.MaxTargetAddrs, metrics.OtherValue)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("outbound", "svc", "true", "", "", metrics.OtherValue, "", "")); got != 50 {
		t.Errorf("requests under target_addr=%q: %v, want 50", metrics.OtherValue, got)
	}
}

// The grpc_status label takes gRPC's status codes as they come, and
// counts any other value the upstream sends as metrics.OtherValue: else
// each new value would be a new series.
func TestGRPCStatusLabelBounded(t *testing.T) {
	_, m, _ := newServer(t, "outbound")
	values := []string{"0", "7", "16", "17", "-1", "007", "+1", " 1", "abc", strings.Repeat("9", 40)}
	for _, v := range values {
		m.record(Labels{Direction: "outbound"}, &exchange{status: 200, grpcStatus: v})
	}
	for i := range 100 {
		m.record(Labels{Direction: "outbound"}, &exchange{status: 200, grpcStatus: "x" + strconv.Itoa(i)})
	}
	if n := testutil.CollectAndCount(m.responses); n != 4 {
		t.Errorf("%d response_total series, want 4 (0, 7, 16 and %q)", n, metrics.OtherValue)
	}
	other := m.responses.WithLabelValues("outbound", "", "", "", "", "", "", "", "200", metrics.OtherValue, "failure")
	if got := testutil.ToFloat64(other); got != float64(len(values)-3+100) {
		t.Errorf("responses under grpc_status=%q: %v, want %d", metrics.OtherValue, got, len(values)-3+100)
	}
}

// Exchanges are counted in their own series whether their series are
// cached or, past maxCachedSeries, looked up; the cache stays bounded.
func TestMetricsSeriesCacheBounded(t *testing.T) {
	_, m, _ := newServer(t, "outbound")
	const authorities, codes = 900, 5
	for round := range 2 {
		for a := range authorities {
			for c := range codes {
				ex := &exchange{status: 200 + c, start: time.Now()}
				if c%2 == 0 {
					ex.headersAt = ex.start
				}
				m.record(Labels{Direction: "outbound", Authority: "h" + strconv.Itoa(a)}, ex)
			}
		}
		if n := testutil.CollectAndCount(m.responses); n != authorities*codes {
			t.Fatalf("round %d: %d response_total series, want %d", round, n, authorities*codes)
		}
	}
	if n := testutil.CollectAndCount(m.latency); n != authorities*3 {
		t.Errorf("%d response_latency_ms series, want %d (only exchanges with a response head)", n, authorities*3)
	}
	for _, a := range []int{0, authorities - 1} {
		for c := range codes {
			got := testutil.ToFloat64(m.responses.WithLabelValues("outbound", "h"+strconv.Itoa(a), "", "", "", "", "", "", strconv.Itoa(200+c), "", "success"))
			if got != 2 {
				t.Errorf("authority h%d, status %d: %v responses, want 2", a, 200+c, got)
			}
		}
	}
	m.mu.RLock()
	cached := len(m.series)
	m.mu.RUnlock()
	if cached > maxCachedSeries {
		t.Errorf("%d series cached, want at most %d", cached, maxCachedSeries)
	}
}

// A grpc-status that is not UTF-8 (HTTP/1 allows obs-text in a field
// value, and so does HTTP/2's framer) is counted as metrics.OtherValue:
// taken as it came, WithLabelValues panicked on it and the upstream
// crashed the proxy.
func TestRelayGRPCStatusNotUTF8(t *testing.T) {
	app, _ := scriptedApp(t, func(*http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nGrpc-Status: 1\xff\r\nContent-Length: 0\r\n\r\n", false
	})
	r := startRelay(t, app, TransportConfig{})
	c, br := clientConn(t, r.addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	if resp, _ := readResponse(t, br, "GET"); resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	other := r.m.responses.WithLabelValues("outbound", "svc", "true", "", "", "", "", "", "200", metrics.OtherValue, "failure")
	waitForCount(t, other, 1)
	if got := testutil.ToFloat64(other); got != 1 {
		t.Errorf("%v responses under grpc_status=%q, want 1", got, metrics.OtherValue)
	}
}

// An HTTP/2 :authority need not be UTF-8 (the framer allows obs-text):
// case folding makes it so, as WithLabelValues panics on anything else.
func TestAuthorityLabelNotUTF8(t *testing.T) {
	_, m, _ := newServer(t, "outbound")
	m.record(Labels{Direction: "outbound", Authority: "A\xff.example"}, &exchange{status: 200})
	want := "a\uFFFD.example"
	if got := testutil.ToFloat64(m.requests.WithLabelValues("outbound", want, "", "", "", "", "", "")); got != 1 {
		t.Errorf("%v requests under authority=%q, want 1", got, want)
	}
}

// Log lines carry at most a host name's worth of the authority a client
// sent, which may be as long as a header.
func TestAuthorityLogFieldCut(t *testing.T) {
	tests := []struct {
		in      string
		wantLen int
	}{
		{"svc.ns:80", len("svc.ns:80")},
		{strings.Repeat("a", maxAuthorityLen), maxAuthorityLen},
		{strings.Repeat("a", maxAuthorityLen+1), maxAuthorityLen + len("...(cut)")},
		{strings.Repeat("a", 1<<20), maxAuthorityLen + len("...(cut)")},
	}
	for _, tt := range tests {
		f := authorityField(tt.in)
		if f.Key != "authority" || len(f.String) != tt.wantLen || !strings.HasPrefix(tt.in, strings.TrimSuffix(f.String, "...(cut)")) {
			t.Errorf("authorityField(%d bytes) = %q (%d bytes), want %d bytes of it", len(tt.in), f.String[:min(len(f.String), 20)], len(f.String), tt.wantLen)
		}
	}
}
