package test

import (
	"bytes"
	"crypto/rand"
	"net"
	"testing"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// A Redis client reaches a real redis-server through both proxies on an
// opaque port: the connection goes to the server proxy's inbound port with
// the Redis port in the transport header, no detection happens, and the
// byte counters on both sides equal what crossed the wire.
func TestOpaqueRedisSetGetThroughInboundPort(t *testing.T) {
	redisPort := redisApp(t)
	p := startPair(t, redisPort, pairOptions{opaque: true})

	value := make([]byte, 1<<20)
	if _, err := rand.Read(value); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.listen)
	if err != nil {
		t.Fatal(err)
	}
	if reply, err := redisDo(c, "SET", "k", string(value)); err != nil || reply != "OK" {
		t.Fatalf("SET: %q, %v", reply, err)
	}
	got, err := redisDo(c, "GET", "k")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	if !bytes.Equal([]byte(got), value) {
		t.Fatalf("GET returned %d bytes differing from the %d set", len(got), len(value))
	}
	c.Close()

	inboundAddr := p.server.Addrs.Inbound.String()
	meshtest.Eventually(t, "both proxies to count the connection closed", func() bool {
		return p.client.Metric(t, "tcp_close_total", map[string]string{"direction": "outbound"}) == 2 &&
			p.server.Metric(t, "tcp_close_total", map[string]string{"direction": "inbound"}) == 2
	})

	// The client proxy dialed the server proxy's inbound port, over mTLS,
	// and saw the server's identity.
	if n := p.client.Metric(t, "tcp_open_total", map[string]string{
		"direction": "outbound", "peer": "dst", "tls": "true", "target_addr": inboundAddr,
		"server_id": meshtest.ID("server").String(),
	}); n != 1 {
		t.Errorf("client proxy opened %v mTLS connections to %s, want 1", n, inboundAddr)
	}
	// The server proxy accepted it there from the client's identity and
	// forwarded to Redis's port.
	if n := p.server.Metric(t, "tcp_open_total", map[string]string{
		"direction": "inbound", "peer": "dst", "client_id": meshtest.ID("client").String(),
		"target_addr": meshtest.Join("127.0.0.1", redisPort),
	}); n != 1 {
		t.Errorf("server proxy forwarded %v connections to redis, want 1", n)
	}
	// Opaque port: no detection at all.
	if n := p.client.Metric(t, "protocol_detect_total", nil); n != 0 {
		t.Errorf("protocol_detect_total = %v on an opaque port, want 0", n)
	}

	// Bytes: what the app sent is what the client proxy read from it and
	// what the server proxy wrote to Redis, and back.
	clientRead := p.client.Metric(t, "tcp_read_bytes_total", map[string]string{"direction": "outbound", "peer": "src"})
	clientWrite := p.client.Metric(t, "tcp_write_bytes_total", map[string]string{"direction": "outbound", "peer": "src"})
	serverToApp := p.server.Metric(t, "tcp_write_bytes_total", map[string]string{"direction": "inbound", "peer": "dst"})
	appToServer := p.server.Metric(t, "tcp_read_bytes_total", map[string]string{"direction": "inbound", "peer": "dst"})
	if clientRead < float64(len(value)) || clientRead != serverToApp {
		t.Errorf("request bytes: client proxy read %v from the app, server proxy wrote %v to redis", clientRead, serverToApp)
	}
	if clientWrite < float64(len(value)) || clientWrite != appToServer {
		t.Errorf("response bytes: server proxy read %v from redis, client proxy wrote %v to the app", appToServer, clientWrite)
	}
}
