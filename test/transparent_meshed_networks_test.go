//go:build linux

package test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// A pod proxy given the pod networks as --meshed-networks and an empty
// destination table carries connections to meshed pods over mTLS, over
// IPv4 and IPv6, expecting any identity of its trust domain. A pod without
// a proxy inside those networks is not silently reached in plaintext: the
// connection fails until the destination table lists it as unmeshed, and
// after that reload the meshed networks still apply to the other pods.
func TestTransparentMeshedNetworks(t *testing.T) {
	t.Parallel()
	bed := newTestBed(t)
	client := bed.meshedPod(t, "client", nil, nil, "--outbound-addr=[::]:4140", "--meshed-networks="+podLAN.String()+","+podLAN6.String())
	server := bed.meshedPod(t, "server", nil, nil)
	plain := bed.unmeshedPod(t, "plain")
	const port = 5432 // opaque by default: no detection delay
	server.serveEcho(t, port)
	plain.serveEcho(t, port)
	serverID := meshtest.ID("server").String()

	for _, ip := range []netip.Addr{server.ip, server.ip6} {
		if got, err := client.echo(t, ip, port); err != nil || got != "127.0.0.1 hello" {
			t.Fatalf("echo to the server pod at %v: %q, %v; want it delivered by the server's proxy", ip, got, err)
		}
		if n := client.metric(t, "tcp_open_total", map[string]string{
			"direction": "outbound", "peer": "dst", "tls": "true", "server_id": serverID,
			"target_addr": netip.AddrPortFrom(ip, 4143).String(),
		}); n != 1 {
			t.Errorf("client proxy: %v mTLS connections to %v:4143 as %s, want 1", n, ip, serverID)
		}
	}

	// The plain pod is in the meshed networks: no plaintext, a failure.
	plainTarget := map[string]string{"direction": "outbound", "peer": "dst", "tls": "disabled",
		"target_addr": netip.AddrPortFrom(plain.ip, port).String()}
	if got, err := client.echo(t, plain.ip, port); err == nil && got != "" {
		t.Errorf("echo to the unlisted plain pod answered %q, want a failed connection", got)
	}
	if n := client.metric(t, "tcp_open_total", plainTarget); n != 0 {
		t.Errorf("client proxy opened %v plaintext connections to the plain pod, want none", n)
	}

	// Listing it as unmeshed lets it through in plaintext.
	path := filepath.Join(bed.dir, "client", "meshproxy.yaml")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "destinations:\n  - {match: %q, meshed: false}\n", plain.ip), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	want := client.ip.String() + " hello"
	meshtest.Eventually(t, "the reloaded table to reach the plain pod in plaintext", func() bool {
		got, err := client.echo(t, plain.ip, port)
		return err == nil && got == want
	})
	if n := client.metric(t, "tcp_open_total", plainTarget); n != 1 {
		t.Errorf("client proxy: %v plaintext connections to the plain pod, want 1", n)
	}
	// The server pod's proxy would deliver plaintext too: the metric tells.
	if got, err := client.echo(t, server.ip, port); err != nil || got != "127.0.0.1 hello" {
		t.Errorf("echo to the server pod after the reload: %q, %v", got, err)
	}
	if n := client.metric(t, "tcp_open_total", map[string]string{
		"direction": "outbound", "peer": "dst", "tls": "true", "server_id": serverID,
		"target_addr": netip.AddrPortFrom(server.ip, 4143).String(),
	}); n != 2 {
		t.Errorf("client proxy: %v mTLS connections to the server pod, want 2: the meshed networks must outlive the reload", n)
	}
}
