package test

import (
	"net/netip"
	"testing"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// Skip ports bypass the proxies. A port skipped outbound in the client pod
// and inbound in the server pod is a plain connection from app to app: the
// server sees the client pod's IP and neither proxy counts it. Skipped only
// outbound, the connection still meets the server's inbound proxy, as a
// plaintext client without identity. Not skipped, it goes through both
// proxies over mTLS.
func TestTransparentSkipPortsBypassTheProxies(t *testing.T) {
	t.Parallel()
	bed := newTestBed(t)
	serverIP := podLAN.Addr().Next().Next()
	client := bed.meshedPod(t, "client", meshedIP(serverIP, "server"),
		[]string{"--skip-outbound-ports=9000,9002"})
	server := bed.meshedPod(t, "server", nil, []string{"--skip-inbound-ports=9000"})
	for _, port := range []uint16{9000, 9001, 9002} {
		server.serveEcho(t, port)
	}

	total := func(p *pod) float64 { return p.metric(t, "tcp_open_total", nil) }
	got, err := client.echo(t, server.ip, 9000)
	if want := client.ip.String() + " hello"; err != nil || got != want {
		t.Fatalf("port skipped on both sides: got %q, %v; want %q (straight from the client pod)", got, err, want)
	}
	if c, s := total(client), total(server); c != 0 || s != 0 {
		t.Errorf("port skipped on both sides: the proxies counted %v and %v connections, want none", c, s)
	}

	got, err = client.echo(t, server.ip, 9002)
	if want := "127.0.0.1 hello"; err != nil || got != want {
		t.Fatalf("port skipped outbound only: got %q, %v; want %q (through the server's proxy)", got, err, want)
	}
	target := netip.AddrPortFrom(server.ip, 9002).String()
	meshtest.Eventually(t, "the server proxy to count the plaintext connection closed", func() bool {
		return server.metric(t, "tcp_close_total", map[string]string{"direction": "inbound", "peer": "src", "tls": "no_identity", "target_addr": target}) == 1
	})
	if c := total(client); c != 0 {
		t.Errorf("port skipped outbound: the client proxy counted %v connections, want none", c)
	}

	got, err = client.echo(t, server.ip, 9001)
	if want := "127.0.0.1 hello"; err != nil || got != want {
		t.Fatalf("port not skipped: got %q, %v; want %q", got, err, want)
	}
	meshtest.Eventually(t, "the server proxy to count the mTLS connection closed", func() bool {
		return server.metric(t, "tcp_close_total", map[string]string{"direction": "inbound", "peer": "src", "tls": "true"}) == 1
	})
	if n := client.metric(t, "tcp_open_total", map[string]string{"direction": "outbound", "peer": "dst", "tls": "true"}); n != 1 {
		t.Errorf("port not skipped: the client proxy opened %v mTLS connections, want 1", n)
	}
}
