package test

import (
	"net/netip"
	"testing"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// A peer proxy may send its mTLS to the app port itself rather than to
// 4143 (here: a destination entry whose inbound port is the app port). The
// server pod's firewall redirects the connection to the inbound proxy,
// which tells it from an unmeshed client by the ClientHello offering the
// transport header protocol, verifies the peer and delivers it with the
// client's identity. The header must name the port the connection was
// for: one naming another port is refused.
func TestTransparentMeshTLSAddressedToAnAppPort(t *testing.T) {
	t.Parallel()
	bed := newTestBed(t)
	serverIP := podLAN.Addr().Next().Next()
	serverID := meshtest.ID("server").String()
	client := bed.meshedPod(t, "client", []podDest{
		{Match: netip.AddrPortFrom(serverIP, 9000).String(), ID: serverID, InboundPort: 9000},
		// Connections for 9001 are sent to 9000, header saying 9001.
		{Match: netip.AddrPortFrom(serverIP, 9001).String(), ID: serverID, InboundPort: 9000},
	}, nil)
	server := bed.meshedPod(t, "server", nil, nil)
	server.serveEcho(t, 9000)
	server.serveEcho(t, 9001)

	got, err := client.echo(t, server.ip, 9000)
	if want := "127.0.0.1 hello"; err != nil || got != want {
		t.Fatalf("mTLS to the app port: got %q, %v; want %q", got, err, want)
	}
	appPort := netip.AddrPortFrom(server.ip, 9000).String()
	meshtest.Eventually(t, "the connection to be counted closed", func() bool {
		return server.metric(t, "tcp_close_total", map[string]string{"direction": "inbound", "peer": "src"}) == 1
	})
	if n := server.metric(t, "tcp_open_total", map[string]string{
		"direction": "inbound", "peer": "src", "tls": "true", "client_id": meshtest.ID("client").String(), "target_addr": appPort,
	}); n != 1 {
		t.Errorf("server proxy: %v mTLS connections from the client on %s, want 1", n, appPort)
	}
	if n := client.metric(t, "tcp_open_total", map[string]string{
		"direction": "outbound", "peer": "dst", "tls": "true", "server_id": serverID, "target_addr": appPort,
	}); n != 1 {
		t.Errorf("client proxy: %v mTLS connections to %s, want 1", n, appPort)
	}

	if got, err := client.echo(t, server.ip, 9001); err == nil && got != "" {
		t.Errorf("header naming another port than the connection's: got %q, want it refused", got)
	}
	meshtest.Eventually(t, "the refusal to be counted", func() bool {
		return server.metric(t, "inbound_tls_refused_total", map[string]string{"reason": "bad_header"}) == 1
	})
	// The refusal is logged with the port once, though both the redirect
	// and the header name it.
	if !server.proxy.LogContains(`"reason":"bad_header"`) {
		t.Error("server proxy did not log the refusal")
	}
	server.proxy.CheckLogKeys(t)
}
