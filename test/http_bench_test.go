package test

import (
	"io"
	"net/http"
	"testing"
	"time"
)

// BenchmarkHTTPRequestLatency measures keep-alive GET latency to an app
// directly, through a proxy pair that carries the port as opaque bytes, and
// through a pair that proxies HTTP (detection, HTTP proxying both ways,
// mTLS both times). The three alternate request by request so all see the
// same machine load; it reports the mean of each and the ratios
// mesh/direct and mesh/opaque, the cost of handling HTTP rather than bytes.
func BenchmarkHTTPRequestLatency(b *testing.B) {
	app := startHTTPApp(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	p := startPair(b, app.port, pairOptions{})
	op := startPair(b, app.port, pairOptions{opaque: true})
	direct := httpClient(b, "127.0.0.1:"+itoa(app.port), false)
	opaque := httpClient(b, op.listen, false)
	mesh := httpClient(b, p.listen, false)
	get := func(c *http.Client) time.Duration {
		start := time.Now()
		resp, err := c.Get(appURL(app.port, "/"))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return time.Since(start)
	}
	// Connections up before timing.
	get(direct)
	get(opaque)
	get(mesh)
	b.ReportAllocs()
	var d, o, m time.Duration
	for b.Loop() {
		d += get(direct)
		o += get(opaque)
		m += get(mesh)
	}
	b.ReportMetric(float64(d.Microseconds())/float64(b.N), "direct-µs/req")
	b.ReportMetric(float64(o.Microseconds())/float64(b.N), "opaque-µs/req")
	b.ReportMetric(float64(m.Microseconds())/float64(b.N), "mesh-µs/req")
	b.ReportMetric(float64(m)/float64(d), "mesh/direct")
	b.ReportMetric(float64(m)/float64(o), "mesh/opaque")
}
