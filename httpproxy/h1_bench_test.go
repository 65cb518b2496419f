package httpproxy

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed722d2a70/meshproxy/internal/header"
	"github.com/seed722d2a70/meshproxy/internal/tcptest"
)

// fixedApp answers every request on its conns with a 2-byte body, without
// allocating, so that a benchmark's allocations are the proxy's.
func fixedApp(tb testing.TB) string {
	return tcptest.Serve(tb, func(c net.Conn) {
		buf := make([]byte, 4096)
		resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		n := 0
		for {
			m, err := c.Read(buf[n:])
			if err != nil {
				return
			}
			n += m
			for {
				end := bytes.Index(buf[:n], []byte("\r\n\r\n"))
				if end < 0 {
					break
				}
				if _, err := c.Write(resp); err != nil {
					return
				}
				n = copy(buf, buf[end+4:n])
			}
		}
	})
}

// benchmarkOneProxy sends keep-alive GETs through one proxy to fixedApp
// and reports the allocations per request; client and app allocate nothing
// in steady state.
func benchmarkOneProxy(b *testing.B, info func(app string) *Conn) {
	app := fixedApp(b)
	m, err := NewMetrics(prometheus.NewRegistry(), nil)
	if err != nil {
		b.Fatal(err)
	}
	s := New(Config{Direction: "outbound", Metrics: m})
	b.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	conn := info(app)
	addr := tcptest.Serve(b, func(c net.Conn) { s.ServeConn(b.Context(), c, conn) })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET / HTTP/1.1\r\nHost: svc.example\r\nUser-Agent: bench\r\n\r\n")
	buf := make([]byte, 4096)
	get := func() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		n := 0
		for !bytes.HasSuffix(buf[:n], []byte("\r\n\r\nok")) {
			m, err := c.Read(buf[n:])
			if err != nil {
				b.Fatal(err)
			}
			n += m
		}
	}
	for range 10 { // pools and caches warm
		get()
	}
	b.ReportAllocs()
	for b.Loop() {
		get()
	}
}

// BenchmarkProxiedHTTP1RequestAllocs measures one proxy's allocations per
// keep-alive HTTP/1 request in steady state: through the HTTP/1 relay, and
// through net/http's server and transport (what a connection not marked
// HTTP/1 still gets) for comparison.
func BenchmarkProxiedHTTP1RequestAllocs(b *testing.B) {
	b.Run("relay", func(b *testing.B) {
		benchmarkOneProxy(b, func(app string) *Conn {
			var ps Pools[string]
			b.Cleanup(ps.CloseIdle)
			pool := ps.Get(app, time.Now(), func() *http.Transport { return NewTransport(TransportConfig{Dial: dialTo(app)}) })
			return &Conn{Protocol: header.HTTP1, H1: pool, Upstream: app, Labels: Labels{Direction: "outbound", TLS: "true"}}
		})
	})
	b.Run("net-http", func(b *testing.B) {
		benchmarkOneProxy(b, func(app string) *Conn {
			tr := NewTransport(TransportConfig{Dial: dialTo(app)})
			b.Cleanup(tr.CloseIdleConnections)
			return &Conn{Transport: tr, Upstream: app, Labels: Labels{Direction: "outbound", TLS: "true"}}
		})
	})
}
