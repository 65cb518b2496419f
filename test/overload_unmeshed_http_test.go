package test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// In transparent mode the proxy serves unmeshed clients' HTTP itself, so
// it holds their slow request heads and idle keep-alives: those
// connections are capped (--inbound-max-unmeshed-http, and here the
// per-source cap, -per-source; the total's is the same code, see
// TestPendingLimiter),
// counted in a gauge, and past the cap new ones are reset and counted,
// while the ones within it are served. Once they close, the count is back
// to zero and a new client is served.
func TestOverloadUnmeshedHTTPConnectionsCapped(t *testing.T) {
	const limit = 20
	bed := newTestBed(t)
	server := bed.meshedPod(t, "server", nil, nil, "--inbound-max-unmeshed-http-per-source=20")
	server.serveHTTP(t, 8080)
	client := bed.unmeshedPod(t, "client")
	if _, err := client.get(t, server.ip, 8080); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, "the first client's connection to be let go", func() bool {
		return server.metric(t, "inbound_unmeshed_http_connections", nil) == 0
	})

	// Slow request heads: the proxy holds each, waiting for the rest.
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 2 * limit {
		c, err := client.dial(t, server.ip, 8080)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	meshtest.Eventually(t, "every slow head to be decided", func() bool {
		return server.metric(t, "inbound_unmeshed_http_connections", nil) == limit &&
			server.metric(t, "inbound_connections_shed_total", map[string]string{"reason": "unmeshed_source_limit"}) == limit
	})
	// The ones past the cap were reset; the others are still open.
	reset := 0
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
			reset++
		}
	}
	if reset != limit {
		t.Errorf("%d of %d slow heads were closed, want the %d past the cap", reset, len(conns), limit)
	}
	if !server.proxy.LogContains("unmeshed_source_limit") {
		t.Error("nothing logged about the unmeshed HTTP cap")
	}
	// Those within the cap are served once they finish their heads.
	served := 0
	for _, c := range conns {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("Connection: close\r\n\r\n")); err != nil {
			continue
		}
		if b, err := io.ReadAll(c); err == nil && len(b) > 0 {
			served++
		}
	}
	if served != limit {
		t.Errorf("%d slow heads served once complete, want %d", served, limit)
	}
	meshtest.Eventually(t, "the unmeshed HTTP connections to be let go", func() bool {
		return server.metric(t, "inbound_unmeshed_http_connections", nil) == 0
	})
	if _, err := client.get(t, server.ip, 8080); err != nil {
		t.Errorf("a client after the others closed: %v", err)
	}
}
