package httpproxy

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/net/http2"

	"github.com/seed722d2a70/meshproxy/internal/header"
	"github.com/seed722d2a70/meshproxy/internal/logtest"
)

// Through net/http (--http2-relay=false), an upstream's :status that is
// not three digits is a bad gateway, as in the relay: net/http's HTTP/2
// transport takes any integer, its server panics writing one that is not
// three digits, and the status_code label took it as it came (a series per
// value the upstream chose).
func TestNetHTTPUpstreamStatusNotThreeDigits(t *testing.T) {
	statuses := []string{"1234", "99999999", "-5", "0", "42"}
	upstream := rawH2Server(t, nil, func(r *rawH2) {
		for i := 0; ; i++ {
			f, _ := r.next(isType[*http2.MetaHeadersFrame]).(*http2.MetaHeadersFrame)
			if f == nil {
				return
			}
			r.headers(f.StreamID, true, ":status", statuses[i%len(statuses)])
		}
	})
	s, m, _ := startServer(t, Config{Direction: "outbound"})
	info := &Conn{Protocol: header.HTTP2, Upstream: "app", Labels: Labels{Direction: "outbound", TLS: "true"},
		Transport: newPool(NewTransport(TransportConfig{Dial: dialTo(upstream), Protocol: header.HTTP2}))}
	client := h2cClient(t, serveOne(t, s, info))
	for _, status := range statuses {
		resp, err := client.Get("http://svc/")
		if err != nil {
			t.Errorf(":status %s: %v", status, err)
			continue
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf(":status %s: the client got %d, want %d", status, resp.StatusCode, http.StatusBadGateway)
		}
	}
	bad := m.responses.WithLabelValues("outbound", "svc", "true", "", "", "", "", "", strconv.Itoa(http.StatusBadGateway), "", "failure")
	waitForCount(t, bad, float64(len(statuses)))
	if got := testutil.ToFloat64(bad); got != float64(len(statuses)) {
		t.Errorf("%v responses counted as 502, want %d", got, len(statuses))
	}
	if n := testutil.CollectAndCount(m.responses); n != 1 {
		t.Errorf("%d response_total series, want 1 (502)", n)
	}
}

// Through net/http (--http2-relay=false), "request failed" lines are
// limited as the relay's are: one a second per reason, with a count of
// those left out. Before, every failed request logged a line.
func TestNetHTTPFailedRequestLogLimited(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	s, _, _ := startServer(t, Config{Direction: "outbound", Log: zap.New(core)})
	info := &Conn{Protocol: header.HTTP2, Upstream: "app", Labels: Labels{Direction: "outbound", TLS: "true"},
		Transport: newPool(NewTransport(TransportConfig{Dial: dialTo(closedAddr(t)), Protocol: header.HTTP2}))}
	client := h2cClient(t, serveOne(t, s, info))
	const requests = 20
	start := time.Now()
	for range requests {
		resp, err := client.Get("http://svc/")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("got %d from an unreachable upstream, want 502", resp.StatusCode)
		}
	}
	elapsed := time.Since(start)
	lines := logs.FilterMessage("request failed").Len()
	if lines == 0 || lines > 1+int(elapsed/time.Second) {
		t.Errorf("%d \"request failed\" lines for %d failures in %v, want one a second", lines, requests, elapsed.Round(time.Millisecond))
	}
	logtest.CheckEntries(t, logs.All())
}
