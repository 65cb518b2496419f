//go:build linux

package test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
	"github.com/seed722d2a70/meshproxy/test/spiretest"
)

// Two meshproxy processes get their identities from a real SPIRE agent
// (told apart by the agent's unix attestor from the path of their binary)
// and carry traffic between them over mTLS with those IDs; a workload
// registered under another ID is refused; SVIDs rotate under a long-lived
// connection without a single error while new connections present the new
// certificate; and when the agent goes away the proxies keep serving with
// the SVID they hold, become not-ready only once it has expired, and
// recover without a restart when the agent returns.
func TestSPIREIdentitiesRotationAndAgentOutage(t *testing.T) {
	env := spiretest.Start(t, spiretest.Options{})
	td := env.TrustDomain().Name()
	serverID, clientID := "spiffe://"+td+"/server", "spiffe://"+td+"/client"
	serverBin := spiretest.CopyExecutable(t, meshproxyBin)
	clientBin := spiretest.CopyExecutable(t, meshproxyBin)
	intruderBin := spiretest.CopyExecutable(t, meshproxyBin)
	// A 30 s TTL makes the agent rotate within about 10 s of issuing.
	const ttl = 30 * time.Second
	env.CreateEntry(t, serverID, []string{spiretest.PathSelector(serverBin)}, ttl)
	env.CreateEntry(t, clientID, []string{spiretest.PathSelector(clientBin)}, ttl)
	env.CreateEntry(t, "spiffe://"+td+"/intruder", []string{spiretest.PathSelector(intruderBin)}, ttl)

	appPort := echoApp(t)
	socket := "--spiffe-socket=" + env.AgentAddr()
	server := meshtest.StartProcess(t, serverBin, nil, socket,
		"--admin-addr=127.0.0.1:0", "--inbound-addr=127.0.0.1:0", "--outbound-addr=127.0.0.1:0",
		"--inbound-authorize="+clientID)
	clientConfig := writeClientConfig(t, appPort, server.Inbound, serverID)
	startClient := func(bin string) *meshtest.Process {
		return meshtest.StartProcess(t, bin, nil, socket, "--config="+clientConfig,
			"--admin-addr=127.0.0.1:0", "--inbound-addr=127.0.0.1:0", "--outbound-addr=127.0.0.1:0")
	}
	client := startClient(clientBin)

	// A long-lived connection that exchanges a message every 50 ms for
	// the whole test, counting any error.
	var exchanges, failures atomic.Int64
	stop := make(chan struct{})
	stopped := make(chan struct{})
	long := dialTCP(t, client.Listeners[0])
	go func() {
		defer close(stopped)
		buf := make([]byte, 16)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			msg := fmt.Sprintf("ping %08d\n", i%1e8)
			_ = long.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := long.Write([]byte(msg)); err != nil {
				failures.Add(1)
				continue
			}
			if _, err := io.ReadFull(long, buf[:len(msg)]); err != nil || string(buf[:len(msg)]) != msg {
				failures.Add(1)
				continue
			}
			exchanges.Add(1)
		}
	}()

	t.Run("mTLS with the SPIRE-issued IDs on both sides", func(t *testing.T) {
		meshtest.Eventually(t, "the long-lived connection to carry traffic", func() bool { return exchanges.Load() > 3 })
		if n := client.Metric(t, "tcp_open_total", map[string]string{"direction": "outbound", "peer": "dst", "tls": "true", "server_id": serverID}); n < 1 {
			t.Errorf("client proxy has no mTLS connection to %s", serverID)
		}
		if n := server.Metric(t, "tcp_open_total", map[string]string{"direction": "inbound", "peer": "src", "client_id": clientID}); n < 1 {
			t.Errorf("server proxy has no connection from %s", clientID)
		}
		for _, p := range []*meshtest.Process{client, server} {
			if n := p.Metric(t, "identity_svid_spiffe_id", nil); n != 1 {
				t.Errorf("identity_svid_spiffe_id sums to %v, want 1", n)
			}
		}
	})

	t.Run("a workload registered under the wrong ID is refused", func(t *testing.T) {
		intruder := startClient(intruderBin)
		before := server.Metric(t, "inbound_tls_refused_total", map[string]string{"reason": "unauthorized"})
		assertClosedWithoutData(t, intruder.Listeners[0])
		meshtest.Eventually(t, "the refusal to be counted", func() bool {
			return server.Metric(t, "inbound_tls_refused_total", map[string]string{"reason": "unauthorized"}) > before
		})
	})

	t.Run("SVIDs rotate under a long-lived connection", func(t *testing.T) {
		first := serverSerial(t, server.Inbound)
		refreshes := client.Metric(t, "identity_cert_refresh_count", nil)
		deadline := time.Now().Add(60 * time.Second)
		for serverSerial(t, server.Inbound) == first {
			if time.Now().After(deadline) {
				t.Fatal("the server proxy's certificate did not rotate within 60s")
			}
			time.Sleep(500 * time.Millisecond)
		}
		meshtest.Eventually(t, "the client proxy to rotate too", func() bool {
			return client.Metric(t, "identity_cert_refresh_count", nil) > refreshes
		})
		if err := echoRoundTrip(client.Listeners[0], 64<<10); err != nil {
			t.Fatalf("new connection after rotation: %v", err)
		}
		if n := failures.Load(); n != 0 {
			t.Fatalf("the long-lived connection saw %d errors during rotation", n)
		}
	})

	t.Run("agent outage: keep the SVID, not ready only once expired, recover", func(t *testing.T) {
		env.StopAgent(t)
		if !server.Ready() || !client.Ready() {
			t.Fatal("a proxy became not ready as soon as the agent went away, while its SVID is valid")
		}
		if err := echoRoundTrip(client.Listeners[0], 1024); err != nil {
			t.Fatalf("new connection with the agent away: %v", err)
		}
		deadline := time.Now().Add(ttl + 10*time.Second)
		for server.Ready() {
			if time.Now().After(deadline) {
				t.Fatal("the server proxy stayed ready past its SVID's expiry")
			}
			time.Sleep(200 * time.Millisecond)
		}
		env.StartAgent(t)
		// A proxy retries at most every 5 s, and gRPC's reconnect backoff
		// (5 s, 20% jitter) may hold the first retry after the agent's
		// return: recovery takes up to about 11 s, more than Eventually
		// waits.
		deadline = time.Now().Add(20 * time.Second)
		for !server.Ready() || !client.Ready() {
			if time.Now().After(deadline) {
				t.Fatal("the proxies were not ready again 20s after the agent returned")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := echoRoundTrip(client.Listeners[0], 1024); err != nil {
			t.Fatalf("new connection after recovery: %v", err)
		}
	})

	close(stop)
	<-stopped
	if n := failures.Load(); n != 0 {
		t.Errorf("the long-lived connection saw %d errors over the whole test (%d exchanges)", n, exchanges.Load())
	}
}

// writeClientConfig writes a client proxy config with one listener for the
// app, meshed at inbound and expected to be serverID.
func writeClientConfig(t *testing.T, appPort uint16, inbound, serverID string) string {
	t.Helper()
	_, inPort, _ := net.SplitHostPort(inbound)
	path := filepath.Join(t.TempDir(), "client.yaml")
	cfg := fmt.Sprintf(`outbound:
  listeners:
    - {listen: "127.0.0.1:0", target: "%s:%d"}
destinations:
  - match: %s
    address: 127.0.0.1
    inboundPort: %s
    identity: [%q]
    opaquePorts: "%d"
`, appHost, appPort, appHost, inPort, serverID, appPort)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// serverSerial returns the serial number of the certificate the proxy at
// addr presents, read from a TLS handshake that the proxy then refuses for
// want of a client certificate.
func serverSerial(t *testing.T, addr string) string {
	t.Helper()
	var serial string
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // only reading the certificate
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 {
				serial = cs.PeerCertificates[0].SerialNumber.String()
			}
			return nil
		},
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err == nil {
		c.Close()
	}
	if serial == "" {
		t.Fatalf("no certificate from %s: %v", addr, err)
	}
	return serial
}
