package test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// A NetworkPolicy for an opaque port must admit the inbound proxy port
// 4143, not the app port: meshed opaque traffic travels to 4143 with the
// app port in the transport header. Shown with real packets: a filter in
// the server pod, ahead of the interception rules as a CNI's would be,
// admits new TCP connections only to the listed ports. Admitting 4143 (and
// the admin port) lets the meshed Redis client through while an unmeshed
// client dialing 6379 is dropped; admitting 6379 instead blocks the meshed
// client.
func TestTransparentNetworkPolicyMustAdmitTheInboundPort(t *testing.T) {
	t.Parallel()
	bed := newTestBed(t)
	serverIP := podLAN.Addr().Next().Next()
	// A dropped SYN is only noticed when the dial times out: keep it short.
	client := bed.meshedPod(t, "client", meshedIP(serverIP, "server"), nil, "--dial-timeout=500ms")
	server := bed.meshedPod(t, "server", nil, nil)
	unmeshed := bed.unmeshedPod(t, "plain")
	server.startRedis(t, bed.dir)

	// admitOnly replaces the pod's policy: connection-opening SYNs from
	// the LAN to any other port are dropped in the raw table, before
	// connection tracking and the nat redirect see them.
	admitOnly := func(ports string) {
		t.Helper()
		server.ns.MustRun(t, "iptables", "-t", "raw", "-F", "PREROUTING")
		server.ns.MustRun(t, "iptables", "-t", "raw", "-A", "PREROUTING", "-i", "eth0", "-p", "tcp", "--syn",
			"-m", "multiport", "!", "--dports", ports, "-j", "DROP")
	}
	ping := func(p *pod) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := p.ns.DialContext(ctx, "tcp", netip.AddrPortFrom(server.ip, 6379).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = redisDo(c, "PING")
		return err
	}

	admitOnly("4143,4191")
	if err := ping(client); err != nil {
		t.Errorf("policy admitting 4143: meshed Redis client failed: %v", err)
	}
	if err := ping(unmeshed); err == nil {
		t.Errorf("policy admitting 4143: an unmeshed client reached 6379 directly")
	}

	admitOnly("6379,4191")
	if err := ping(client); err == nil {
		t.Errorf("policy admitting 6379 only: meshed Redis client got through, want it blocked at 4143")
	}
	meshtest.Eventually(t, "the client proxy to count the failed dial", func() bool {
		return client.metric(t, "outbound_connect_errors_total", nil) == 1
	})
	if err := ping(unmeshed); err != nil {
		t.Errorf("policy admitting 6379: unmeshed client failed: %v", err)
	}
}
