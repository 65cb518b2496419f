package test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// A destination the client's pod has no route to (the pod's LAN is its only
// network) fails at once with ENETUNREACH: the client's connection is
// closed and the failure counted as "unreachable", telling the operator
// the address is wrong rather than leaving them an "other".
func TestOutboundNoRouteCountedUnreachable(t *testing.T) {
	t.Parallel()
	bed := newTestBed(t)
	noRoute := netip.MustParseAddrPort("192.0.2.1:80") // TEST-NET-1, outside podLAN
	client := bed.meshedPod(t, "client", nil, nil, "--outbound-listener=127.0.0.1:16000="+noRoute.String())

	c, err := client.dial(t, netip.MustParseAddr("127.0.0.1"), 16000)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("hello\n"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 16)); n > 0 || err == nil || isTimeout(err) {
		t.Fatalf("read %d bytes, err %v: want the connection closed by the proxy", n, err)
	}
	meshtest.Eventually(t, "the failed dial counted as unreachable", func() bool {
		return client.metric(t, "outbound_connect_errors_total", map[string]string{"reason": "unreachable"}) == 1
	})
	if !client.proxy.LogContains("network is unreachable") {
		t.Errorf("the proxy did not log the dial error ENETUNREACH:\n%s", client.proxy.Log())
	}
}
