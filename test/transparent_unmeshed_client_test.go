package test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// A pod without a proxy reaches a meshed pod's app ports in plaintext (or in
// TLS of its own, which is not taken for a peer proxy's). The
// server's inbound proxy, to which the firewall redirected the connection,
// lets it through by default, labelled tls="no_identity", plaintext HTTP
// with request metrics; on a port whose policy requires identity it refuses
// it (HTTP with 403 and meshproxy-error), while a meshed client with an
// identity still gets through. A connection to the proxy's own outbound
// port is refused as a loop, from outside the pod as from inside. The other
// way round, the meshed pod's proxy reaches the unmeshed pod in plain TCP.
func TestTransparentUnmeshedClientAllowedOrRefusedByPolicy(t *testing.T) {
	t.Parallel()
	bed := newTestBed(t)
	serverIP := podLAN.Addr().Next().Next()
	meshed := bed.meshedPod(t, "client", meshedIP(serverIP, "server"), nil)
	server := bed.meshedPod(t, "server", nil, nil, "--inbound-require-identity-ports=6379,8081")
	unmeshed := bed.unmeshedPod(t, "plain")
	server.serveHTTP(t, 8080)
	server.serveHTTP(t, 8081)
	server.startRedis(t, bed.dir)
	unmeshed.serveEcho(t, 9000)

	got, err := meshed.echo(t, unmeshed.ip, 9000)
	if want := meshed.ip.String() + " hello"; err != nil || got != want {
		t.Fatalf("meshed pod to an unmeshed one: %q, %v; want %q", got, err, want)
	}
	if n := meshed.metric(t, "tcp_open_total", map[string]string{
		"direction": "outbound", "peer": "dst", "tls": "disabled", "target_addr": netip.AddrPortFrom(unmeshed.ip, 9000).String(),
	}); n != 1 {
		t.Errorf("plain connections from the meshed pod's proxy to the unmeshed pod = %v, want 1", n)
	}

	body, err := unmeshed.get(t, server.ip, 8080)
	if want := "server from 127.0.0.1"; err != nil || body != want {
		t.Fatalf("unmeshed GET: %q, %v; want %q", body, err, want)
	}
	target := netip.AddrPortFrom(server.ip, 8080).String()
	meshtest.Eventually(t, "the plaintext connection to be counted closed", func() bool {
		return server.metric(t, "tcp_close_total", map[string]string{"direction": "inbound", "peer": "src", "tls": "no_identity", "target_addr": target}) == 1
	})
	if n := server.metric(t, "tcp_open_total", map[string]string{"direction": "inbound", "peer": "dst", "client_id": "", "target_addr": "127.0.0.1:8080"}); n != 1 {
		t.Errorf("plaintext connections forwarded to the app = %v, want 1", n)
	}
	// Detected as HTTP: the unmeshed client's requests are counted too.
	unmeshedReq := map[string]string{"direction": "inbound", "tls": "no_identity", "client_id": "", "target_addr": "127.0.0.1:8080"}
	if n := server.metric(t, "request_total", unmeshedReq); n != 1 {
		t.Errorf("unmeshed requests counted = %v, want 1", n)
	}
	unmeshedReq["status_code"], unmeshedReq["classification"] = "200", "success"
	if n := server.metric(t, "response_total", unmeshedReq); n != 1 {
		t.Errorf("unmeshed 200 responses counted = %v, want 1", n)
	}

	// Plaintext HTTP on a port that requires identity: 403, named by the
	// proxy, the app never reached.
	resp, err := unmeshed.httpClient(t).Get("http://" + netip.AddrPortFrom(server.ip, 8081).String() + "/")
	if err != nil {
		t.Fatalf("unmeshed GET on the identity-only port: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("meshproxy-error") == "" {
		t.Errorf("unmeshed GET on the identity-only port: %s, meshproxy-error %q; want 403 naming the proxy", resp.Status, resp.Header.Get("meshproxy-error"))
	}
	if n := server.metric(t, "tcp_open_total", map[string]string{"direction": "inbound", "peer": "dst", "target_addr": "127.0.0.1:8081"}); n != 0 {
		t.Errorf("connections to the identity-only app port = %v, want none", n)
	}
	meshtest.Eventually(t, "the HTTP refusal to be counted", func() bool {
		return server.metric(t, "inbound_tls_refused_total", map[string]string{"reason": "identity_required"}) == 1
	})

	// The client's own TLS (without the mesh's ALPN protocol) is not taken
	// for a peer proxy's: it reaches the app untouched.
	https := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "tls "+r.Proto)
	}))
	if https.Listener, err = server.ns.Listen("tcp", ":8443"); err != nil {
		t.Fatal(err)
	}
	https.EnableHTTP2 = true
	https.StartTLS()
	t.Cleanup(https.Close)
	tr := https.Client().Transport.(*http.Transport).Clone()
	tr.DialContext, tr.DisableKeepAlives = unmeshed.ns.DialContext, true
	tr.TLSClientConfig.ServerName = "example.com" // in httptest's certificate
	resp, err = (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + netip.AddrPortFrom(server.ip, 8443).String() + "/")
	if err != nil {
		t.Fatalf("unmeshed HTTPS: %v", err)
	}
	tlsBody, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(tlsBody) != "tls HTTP/2.0" {
		t.Errorf("unmeshed HTTPS: %q, want the app's own TLS with HTTP/2", tlsBody)
	}
	if n := server.metric(t, "tcp_open_total", map[string]string{
		"direction": "inbound", "peer": "src", "tls": "no_identity", "target_addr": netip.AddrPortFrom(server.ip, 8443).String(),
	}); n != 1 {
		t.Errorf("app TLS connections let through without identity = %v, want 1", n)
	}

	refusedOn := func(p *pod, port uint16) {
		t.Helper()
		c, err := p.dial(t, server.ip, port)
		if err != nil {
			t.Fatalf("dial %v:%d from the %s pod: %v", server.ip, port, p.name, err)
		}
		defer c.Close()
		if reply, err := redisDo(c, "PING"); err == nil {
			t.Errorf("port %d from the %s pod: got %q, want the connection refused", port, p.name, reply)
		}
	}
	refusedOn(unmeshed, 6379)
	meshtest.Eventually(t, "the refusal to be counted", func() bool {
		return server.metric(t, "inbound_tls_refused_total", map[string]string{"reason": "identity_required"}) == 2
	})

	c, err := meshed.dial(t, server.ip, 6379)
	if err != nil {
		t.Fatal(err)
	}
	if reply, err := redisDo(c, "PING"); err != nil || reply != "PONG" {
		t.Errorf("meshed client on the identity-only port: %q, %v", reply, err)
	}
	c.Close()

	// Redirected to 4143 with 4140 as the original destination: the
	// inbound proxy will not forward to its own ports.
	refusedOn(unmeshed, 4140)
	meshtest.Eventually(t, "the inbound loop to be counted", func() bool {
		return server.metric(t, "inbound_tls_refused_total", map[string]string{"reason": "loop"}) == 1
	})
	// From inside the pod, straight to the outbound listener (loopback is
	// never redirected): the original destination is the listener itself.
	c, err = meshed.ns.Dial("tcp", "127.0.0.1:4140")
	if err != nil {
		t.Fatal(err)
	}
	if reply, err := redisDo(c, "PING"); err == nil {
		t.Errorf("connection to the outbound port itself: got %q, want it refused", reply)
	}
	c.Close()
	meshtest.Eventually(t, "the outbound loop to be counted", func() bool {
		return meshed.metric(t, "outbound_connect_errors_total", map[string]string{"reason": "loop"}) == 1
	})
}
