package test

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/internal/header"
	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// The inbound port refuses everything but an authorized peer proxy with a
// valid SVID and a good header: plaintext, TLS below 1.3, ALPN offers
// without the transport header's, foreign CAs, expired or missing
// certificates, unauthorized IDs, a missing or bad header, and ports that
// would loop back into the proxy. Each refusal is counted under its reason,
// the workload never sees a byte, and afterwards the proxy holds no extra
// goroutines or file descriptors.
func TestInboundRefusesBadPeers(t *testing.T) {
	m := meshtest.NewMesh(t)
	appPort := echoApp(t)
	scfg := meshtest.Config()
	scfg.Inbound.Authorize = []string{meshtest.ID("allowed").String()}
	scfg.Inbound.HeaderTimeout = 300 * time.Millisecond
	server := m.Start(t, "server", scfg)
	inbound := server.Addrs.Inbound.String()

	allowed := svid(t, m, "allowed", time.Hour)
	expired := svid(t, m, "allowed", time.Millisecond)
	time.Sleep(20 * time.Millisecond) // let it expire
	intruder := svid(t, m, "intruder", time.Hour)
	foreign := svid(t, meshtest.NewMesh(t), "allowed", time.Hour) // same trust domain name, other CA

	good := header.Header{Port: appPort}
	tests := []struct {
		name   string
		reason string
		dial   func(t *testing.T) net.Conn
	}{
		{"plaintext", "plaintext", func(t *testing.T) net.Conn {
			c := dialTCP(t, inbound)
			_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			return c
		}},
		{"no client certificate", "no_identity", func(t *testing.T) net.Conn {
			return meshDial(t, inbound, nil, header.ALPN, &good)
		}},
		{"foreign CA", "untrusted", func(t *testing.T) net.Conn {
			return meshDial(t, inbound, foreign, header.ALPN, &good)
		}},
		{"expired certificate", "expired", func(t *testing.T) net.Conn {
			return meshDial(t, inbound, expired, header.ALPN, &good)
		}},
		{"unauthorized identity", "unauthorized", func(t *testing.T) net.Conn {
			return meshDial(t, inbound, intruder, header.ALPN, &good)
		}},
		{"no transport header ALPN", "no_transport_header", func(t *testing.T) net.Conn {
			return meshDial(t, inbound, allowed, "", &good)
		}},
		{"TLS 1.2 client", "tls_version", func(t *testing.T) net.Conn {
			return meshDialWith(t, inbound, allowed, header.ALPN, &good, func(c *tls.Config) {
				c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
			})
		}},
		{"ALPN h2 only", "alpn", func(t *testing.T) net.Conn {
			return meshDial(t, inbound, allowed, "h2", &good)
		}},
		{"garbage header", "bad_header", func(t *testing.T) net.Conn {
			c := meshDial(t, inbound, allowed, header.ALPN, nil)
			_, _ = c.Write([]byte("transport.meshproxy.io/v9\r\n\r\n\x00\x00\x00\x00"))
			return c
		}},
		{"header never sent", "bad_header", func(t *testing.T) net.Conn {
			return meshDial(t, inbound, allowed, header.ALPN, nil)
		}},
		{"loop to the inbound port", "loop", func(t *testing.T) net.Conn {
			return meshDial(t, inbound, allowed, header.ALPN, &header.Header{Port: meshtest.Port(server.Addrs.Inbound)})
		}},
		{"loop to the admin port", "loop", func(t *testing.T) net.Conn {
			return meshDial(t, inbound, allowed, header.ALPN, &header.Header{Port: meshtest.Port(server.Addrs.Admin)})
		}},
	}

	// The authorized peer works, before and after the refusals.
	assertEcho := func() {
		t.Helper()
		c := meshDial(t, inbound, allowed, header.ALPN, &good)
		defer c.Close()
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
			t.Fatalf("authorized peer: read %q, %v", buf, err)
		}
	}
	assertEcho()
	inboundPort := meshtest.Port(server.Addrs.Inbound)
	baseline := takeGoroutines()
	sockets := len(socketsOnPorts(t, inboundPort, appPort))

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := server.Metric(t, "inbound_tls_refused_total", map[string]string{"reason": tt.reason})
			c := tt.dial(t)
			defer c.Close()
			// Refused: the proxy closes; nothing is ever echoed back.
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(make([]byte, 64))
			if n > 0 || err == nil || os.IsTimeout(err) {
				t.Fatalf("read %d bytes, err %v: want the connection closed by the proxy", n, err)
			}
			meshtest.Eventually(t, "refusal counted as "+tt.reason, func() bool {
				return server.Metric(t, "inbound_tls_refused_total", map[string]string{"reason": tt.reason}) == before+1
			})
		})
	}
	if n := server.Metric(t, "transport_header_errors_total", nil); n != 2 {
		t.Errorf("transport_header_errors_total = %v, want 2 (garbage and missing header)", n)
	}
	if got := server.Metric(t, "tcp_open_total", map[string]string{"direction": "inbound", "peer": "dst"}); got != 1 {
		t.Errorf("workload connections = %v, want 1 (only the authorized echo)", got)
	}
	assertEcho()

	// Only what this proxy holds: other tests' background work in the
	// same process comes and goes on its own schedule.
	var leaked, open []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		leaked, open = baseline.newProxyGoroutines(), socketsOnPorts(t, inboundPort, appPort)
		if len(leaked) == 0 && len(open) <= sockets || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(leaked) > 0 || len(open) > sockets {
		t.Fatalf("after the refusals: %d new proxy goroutines, sockets %v (baseline %d):\n%s",
			len(leaked), open, sockets, strings.Join(leaked, "\n\n"))
	}
}

// svid issues spiffe://mesh.test/<name> from m's CA.
func svid(t *testing.T, m *meshtest.Mesh, name string, ttl time.Duration) *x509svid.SVID {
	t.Helper()
	s, err := m.CA.Issue(meshtest.ID(name), ttl)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// meshDial plays a peer proxy by hand: TLS 1.3 presenting s (none if nil),
// offering alpn (none if empty), then sending h (nothing if nil). It does
// not verify the server: what is under test is the server's verdict.
func meshDial(t *testing.T, addr string, s *x509svid.SVID, alpn string, h *header.Header) net.Conn {
	t.Helper()
	return meshDialWith(t, addr, s, alpn, h, nil)
}

// meshDialWith is meshDial with the client's TLS configuration changed by
// tweak (when not nil) before dialing.
func meshDialWith(t *testing.T, addr string, s *x509svid.SVID, alpn string, h *header.Header, tweak func(*tls.Config)) net.Conn {
	t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
	if alpn != "" {
		cfg.NextProtos = []string{alpn}
	}
	if s != nil {
		certs, key, err := s.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tls.X509KeyPair(certs, key)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if tweak != nil {
		tweak(cfg)
	}
	raw := dialTCP(t, addr)
	c := tls.Client(raw, cfg)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	// In TLS 1.3 the client finishes first; the server's verdict on our
	// certificate arrives as an alert on the first read.
	if err := c.Handshake(); err != nil {
		return c
	}
	_ = c.SetDeadline(time.Time{})
	if h != nil {
		if err := header.Write(c, *h); err != nil {
			return c
		}
	}
	return c
}

// Identity mismatch is refused by both sides: a client proxy that expects
// another ID than the server presents refuses the server, and a server that
// does not authorize the client's ID refuses the client. The app sees
// neither connection.
func TestIdentityMismatchRefusedByBothSides(t *testing.T) {
	t.Run("client refuses server", func(t *testing.T) {
		p := startPair(t, echoApp(t), pairOptions{opaque: true, identity: []string{meshtest.ID("redis").String()}})
		assertClosedWithoutData(t, p.listen)
		meshtest.Eventually(t, "client proxy to count the refusal", func() bool {
			return p.client.Metric(t, "outbound_connect_errors_total", map[string]string{"reason": "unauthorized"}) == 1
		})
		if n := p.server.Metric(t, "tcp_open_total", map[string]string{"direction": "inbound", "peer": "dst"}); n != 0 {
			t.Errorf("server proxy forwarded %v connections to the app, want 0", n)
		}
	})
	t.Run("server refuses client", func(t *testing.T) {
		p := startPair(t, echoApp(t), pairOptions{opaque: true, serverCfg: func(c *config.Config) {
			c.Inbound.Authorize = []string{meshtest.ID("someone-else").String()}
		}})
		assertClosedWithoutData(t, p.listen)
		meshtest.Eventually(t, "server proxy to count the refusal", func() bool {
			return p.server.Metric(t, "inbound_tls_refused_total", map[string]string{"reason": "unauthorized"}) == 1
		})
		if n := p.server.Metric(t, "tcp_open_total", map[string]string{"direction": "inbound", "peer": "dst"}); n != 0 {
			t.Errorf("server proxy forwarded %v connections to the app, want 0", n)
		}
	})
}

// assertClosedWithoutData sends a request through the proxy at addr and
// expects the connection to end with no answer.
func assertClosedWithoutData(t *testing.T, addr string) {
	t.Helper()
	c := dialTCP(t, addr)
	_, _ = c.Write([]byte("hello"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 16))
	if n > 0 || os.IsTimeout(err) {
		t.Fatalf("read %d bytes, err %v: want the connection closed without data", n, err)
	}
}
