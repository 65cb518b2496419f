package test

import (
	"net/netip"
	"testing"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// Interception works over IPv6 too: ip6tables rules redirect the client
// pod's connection to [::1]:4140, where the proxy (its outbound address the
// default 127.0.0.1:4140, so listening on its [::1] twin) reads
// the original destination with IP6T_SO_ORIGINAL_DST and carries it over
// mTLS to the server pod's IPv6 address; an unmeshed pod's IPv6 connection
// is redirected to the server's inbound proxy and let through without
// identity.
func TestTransparentIPv6BetweenPods(t *testing.T) {
	t.Parallel()
	bed := newTestBed(t)
	serverIP6 := podLAN6.Addr().Next().Next()
	client := bed.meshedPod(t, "client", meshedIP(serverIP6, "server"), nil)
	server := bed.meshedPod(t, "server", nil, nil)
	unmeshed := bed.unmeshedPod(t, "plain")
	if server.ip6 != serverIP6 {
		t.Fatalf("server pod got %v, want %v", server.ip6, serverIP6)
	}
	server.serveHTTP(t, 8080)

	for _, p := range []*pod{client, unmeshed} {
		body, err := p.get(t, server.ip6, 8080)
		if want := "server from 127.0.0.1"; err != nil || body != want {
			t.Fatalf("GET over IPv6 from the %s pod: %q, %v; want %q", p.name, body, err, want)
		}
	}
	target := netip.AddrPortFrom(server.ip6, 8080).String()
	// The plaintext connection is forwarded as is; the meshed request goes
	// over the proxies' pooled HTTP connection, which stays open.
	meshtest.Eventually(t, "the plaintext connection to be counted closed", func() bool {
		return server.metric(t, "tcp_close_total", map[string]string{"direction": "inbound", "peer": "src", "tls": "no_identity"}) == 1
	})
	if n := server.metric(t, "request_total", map[string]string{"direction": "inbound", "client_id": meshtest.ID("client").String()}); n != 1 {
		t.Errorf("server proxy: %v HTTP requests from the client over the mesh, want 1", n)
	}
	if n := client.metric(t, "tcp_open_total", map[string]string{
		"direction": "outbound", "peer": "src", "target_addr": target,
	}); n != 1 {
		t.Errorf("client proxy: %v connections for %s, want 1", n, target)
	}
	if n := client.metric(t, "tcp_open_total", map[string]string{
		"direction": "outbound", "peer": "dst", "tls": "true", "server_id": meshtest.ID("server").String(),
		"target_addr": netip.AddrPortFrom(server.ip6, 4143).String(),
	}); n != 1 {
		t.Errorf("client proxy: %v mTLS connections to the server's IPv6 inbound port, want 1", n)
	}
	if n := server.metric(t, "tcp_open_total", map[string]string{
		"direction": "inbound", "peer": "src", "tls": "true", "client_id": meshtest.ID("client").String(),
	}); n != 1 {
		t.Errorf("server proxy: %v mTLS connections from the client, want 1", n)
	}
	if n := server.metric(t, "tcp_open_total", map[string]string{
		"direction": "inbound", "peer": "src", "tls": "no_identity", "target_addr": target,
	}); n != 1 {
		t.Errorf("server proxy: %v plaintext connections for %s, want 1", n, target)
	}
}
