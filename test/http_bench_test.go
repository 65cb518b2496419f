package test

import (
	"io"
	"net/http"
	"testing"
	"time"
)

// BenchmarkHTTPRequestLatency measures keep-alive GET latency to an app
// directly and through the proxy pair (detection, HTTP proxying both ways,
// mTLS), alternating the two so both see the same machine load, and reports
// the mean of each and their ratio (mesh/direct).
func BenchmarkHTTPRequestLatency(b *testing.B) {
	app := startHTTPApp(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	p := startPair(b, app.port, pairOptions{})
	direct := httpClient(b, "127.0.0.1:"+itoa(app.port), false)
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
	get(direct) // connections up before timing
	get(mesh)
	b.ReportAllocs()
	var d, m time.Duration
	for b.Loop() {
		d += get(direct)
		m += get(mesh)
	}
	b.ReportMetric(float64(d.Microseconds())/float64(b.N), "direct-µs/req")
	b.ReportMetric(float64(m.Microseconds())/float64(b.N), "mesh-µs/req")
	b.ReportMetric(float64(m)/float64(d), "mesh/direct")
}
