package test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/config"
)

// On shutdown an HTTP request in flight is answered in full, with
// Connection: close so the keep-alive client goes away, and the proxy then
// stops without waiting for the rest of the grace period: idle HTTP
// connections do not hold shutdown up the way open opaque streams do.
func TestHTTPShutdownFinishesRequestsInFlight(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	app := startHTTPApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
		_, _ = io.WriteString(w, "finished")
	}))
	const grace = 10 * time.Second
	p := startPair(t, app.port, pairOptions{clientCfg: func(c *config.Config) { c.ShutdownGrace = grace }})
	type result struct {
		resp *http.Response
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := httpClient(t, p.listen, false).Get(appURL(app.port, "/slow"))
		if err != nil {
			res <- result{err: err}
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{resp, string(body), err}
	}()
	<-arrived
	start := time.Now()
	done := p.client.Shutdown()
	time.Sleep(100 * time.Millisecond) // let shutdown begin with the request in flight
	close(release)

	r := <-res
	if r.err != nil || r.body != "finished" {
		t.Fatalf("request in flight: %q, %v", r.body, r.err)
	}
	if !r.resp.Close {
		t.Error("the answer did not tell the client to close its connection")
	}
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v", err)
	}
	if elapsed := time.Since(start); elapsed >= grace {
		t.Errorf("shutdown took the whole %v grace period with only idle HTTP connections left", elapsed)
	}
}
