package test

import (
	"bytes"
	"crypto/rand"
	"net/netip"
	"strings"
	"testing"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// Two pods, each with `meshproxy init` rules and a meshproxy running as its
// own UID. An HTTP client and a Redis client in the client pod connect to
// the server pod's IP and app ports, knowing nothing of the proxies; both
// proxies carry the connections over mTLS, each seeing the other's SPIFFE
// ID. Redis (6379, a default opaque port) goes to the server's inbound port
// 4143 with the port in the transport header and skips detection; HTTP is
// detected. The apps see their peer as the local proxy. `meshproxy init
// --remove` then leaves each pod's nat table as it was.
func TestTransparentHTTPAndRedisBetweenPods(t *testing.T) {
	t.Parallel()
	bed := newTestBed(t)
	serverIP := podLAN.Addr().Next().Next() // the LAN hands out .1, .2, … in order
	clientID, serverID := meshtest.ID("client").String(), meshtest.ID("server").String()
	client := bed.meshedPod(t, "client", meshedIP(serverIP, "server"), nil)
	server := bed.meshedPod(t, "server", nil, nil)
	if server.ip != serverIP {
		t.Fatalf("server pod got %v, want %v", server.ip, serverIP)
	}
	server.serveHTTP(t, 8080)
	server.startRedis(t, bed.dir)

	for range 3 {
		body, err := client.get(t, server.ip, 8080)
		if err != nil {
			t.Fatalf("GET from the client pod: %v", err)
		}
		if want := "server from 127.0.0.1"; body != want {
			t.Fatalf("server app answered %q, want %q (delivered by its proxy)", body, want)
		}
	}

	c, err := client.dial(t, server.ip, 6379)
	if err != nil {
		t.Fatal(err)
	}
	value := make([]byte, 256<<10)
	_, _ = rand.Read(value)
	if reply, err := redisDo(c, "SET", "k", string(value)); err != nil || reply != "OK" {
		t.Fatalf("SET: %q, %v", reply, err)
	}
	if got, err := redisDo(c, "GET", "k"); err != nil || !bytes.Equal([]byte(got), value) {
		t.Fatalf("GET: %d bytes, %v; want the %d bytes set", len(got), err, len(value))
	}
	c.Close()

	// The app's connections close; the HTTP requests' connections between
	// the proxies and to the app are pooled and stay open for reuse.
	meshtest.Eventually(t, "the app connections and Redis's to be counted closed on both sides", func() bool {
		return client.metric(t, "tcp_close_total", map[string]string{"direction": "outbound", "peer": "src"}) == 4 &&
			server.metric(t, "tcp_close_total", map[string]string{"direction": "inbound", "peer": "dst", "target_addr": "127.0.0.1:6379"}) == 1
	})
	// Every HTTP request was counted on both sides with the other's ID.
	if n := client.metric(t, "request_total", map[string]string{"direction": "outbound", "tls": "true", "server_id": serverID}); n != 3 {
		t.Errorf("client proxy: %v HTTP requests to %s, want 3", n, serverID)
	}
	if n := server.metric(t, "request_total", map[string]string{"direction": "inbound", "tls": "true", "client_id": clientID}); n != 3 {
		t.Errorf("server proxy: %v HTTP requests from %s, want 3", n, clientID)
	}
	inbound := netip.AddrPortFrom(server.ip, 4143).String()
	// The client's proxy took every connection from the app transparently
	// and dialed the server's inbound port over mTLS, verifying its ID.
	if n := client.metric(t, "tcp_open_total", map[string]string{
		"direction": "outbound", "peer": "dst", "tls": "true", "server_id": serverID, "target_addr": inbound,
	}); n < 2 || n > 4 {
		t.Errorf("client proxy: %v mTLS connections to %s as %s, want Redis's and 1 to 3 pooled HTTP ones", n, inbound, serverID)
	}
	for port, want := range map[string]float64{"8080": 3, "6379": 1} {
		target := server.ip.String() + ":" + port
		if n := client.metric(t, "tcp_open_total", map[string]string{
			"direction": "outbound", "peer": "src", "target_addr": target,
		}); n != want {
			t.Errorf("client proxy: %v app connections for %s, want %v", n, target, want)
		}
	}
	// The server's proxy accepted them on 4143 from the client's ID and
	// forwarded to the apps on loopback.
	if n := server.metric(t, "tcp_open_total", map[string]string{
		"direction": "inbound", "peer": "src", "tls": "true", "client_id": clientID, "target_addr": inbound,
	}); n < 2 || n > 4 {
		t.Errorf("server proxy: %v mTLS connections from %s on %s, want Redis's and 1 to 3 pooled HTTP ones", n, clientID, inbound)
	}
	for port, want := range map[string][2]float64{"8080": {1, 3}, "6379": {1, 1}} {
		if n := server.metric(t, "tcp_open_total", map[string]string{
			"direction": "inbound", "peer": "dst", "client_id": clientID, "target_addr": "127.0.0.1:" + port,
		}); n < want[0] || n > want[1] {
			t.Errorf("server proxy: %v connections forwarded to port %s, want %v to %v", n, port, want[0], want[1])
		}
	}
	// HTTP was detected; Redis, on an opaque port, was not looked at.
	if n := client.metric(t, "protocol_detect_total", map[string]string{"direction": "outbound"}); n != 3 {
		t.Errorf("client proxy detected %v connections, want the 3 HTTP ones", n)
	}
	if n := client.metric(t, "protocol_detect_total", map[string]string{"direction": "outbound", "result": "http1"}); n != 3 {
		t.Errorf("client proxy: %v connections detected as HTTP/1, want 3", n)
	}
	if n := client.metric(t, "tcp_write_bytes_total", map[string]string{"direction": "outbound", "peer": "src", "target_addr": server.ip.String() + ":6379"}); n < float64(len(value)) {
		t.Errorf("client proxy wrote %v bytes of Redis replies to the app, want at least %d", n, len(value))
	}

	// Removing the rules restores each pod's nat table; the proxies are
	// then bypassed and the app is reached directly.
	for _, p := range []*pod{client, server} {
		p.ns.MustRun(t, meshproxyBin, "init", "--remove")
		if rules := p.natRules(t); strings.Contains(rules, "MESHPROXY") {
			t.Errorf("%s pod: rules left after init --remove:\n%s", p.name, rules)
		}
	}
	body, err := client.get(t, server.ip, 8080)
	if want := "server from " + client.ip.String(); err != nil || body != want {
		t.Errorf("after init --remove: %q, %v; want %q", body, err, want)
	}
}
