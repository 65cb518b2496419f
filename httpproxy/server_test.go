package httpproxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
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
	m, err := NewMetrics(reg)
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
	want := `
# HELP request_total Total count of HTTP requests.
# TYPE request_total counter
request_total{authority="svc.example",client_id="spiffe://t/c",direction="inbound",server_id="",target_addr="",tls="true"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "request_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.ToFloat64(m.responses.WithLabelValues("inbound", "svc.example", "true", "", "spiffe://t/c", "", "200", "0", "success")); n != 3 {
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
