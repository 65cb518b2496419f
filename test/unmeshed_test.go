package test

import (
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// A destination missing from the table is unmeshed: the outbound proxy
// connects to it directly over plain TCP, still detecting and counting, and
// with --refuse-unmeshed it refuses instead.
func TestUnmeshedDestinations(t *testing.T) {
	m := meshtest.NewMesh(t)
	appPort := echoApp(t)
	start := func(refuse bool) *meshtest.Proxy {
		cfg := meshtest.Config()
		cfg.Detect.Timeout = 200 * time.Millisecond
		cfg.Outbound.RefuseUnmeshed = refuse
		cfg.Outbound.Listeners = []config.Listener{{Listen: "127.0.0.1:0", Target: meshtest.Join("127.0.0.1", appPort)}}
		return m.Start(t, "client", cfg)
	}

	t.Run("forwarded as plain TCP, detected and counted", func(t *testing.T) {
		p := start(false)
		if err := echoRoundTrip(p.Addrs.Listeners[0].String(), 256<<10); err != nil {
			t.Fatal(err)
		}
		meshtest.Eventually(t, "the connection to be counted closed", func() bool {
			return p.Metric(t, "tcp_close_total", map[string]string{"peer": "dst"}) == 1
		})
		if n := p.Metric(t, "tcp_open_total", map[string]string{"peer": "dst", "tls": "disabled", "target_addr": meshtest.Join("127.0.0.1", appPort)}); n != 1 {
			t.Errorf("plain connections to the app = %v, want 1", n)
		}
		if n := p.Metric(t, "tcp_write_bytes_total", map[string]string{"peer": "dst"}); n != 256<<10 {
			t.Errorf("bytes written to the app = %v, want %d", n, 256<<10)
		}
		if n := p.Metric(t, "protocol_detect_total", nil); n != 1 {
			t.Errorf("protocol_detect_total = %v, want 1", n)
		}
	})
	t.Run("refused with refuse-unmeshed", func(t *testing.T) {
		p := start(true)
		assertClosedWithoutData(t, p.Addrs.Listeners[0].String())
		meshtest.Eventually(t, "the refusal to be counted", func() bool {
			return p.Metric(t, "outbound_connect_errors_total", map[string]string{"reason": "unmeshed_refused"}) == 1
		})
	})
}
