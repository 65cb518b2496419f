package test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
)

// Two hundred concurrent HTTP/2 streams on one prior-knowledge connection,
// each carrying 96 KiB both ways (more than HTTP/2's initial flow-control
// windows), all complete with the right bodies: flow control holds per
// stream through both proxies, and the client's one connection stays one.
func TestH2CManyConcurrentStreams(t *testing.T) {
	app := startHTTPApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			http.Error(w, "want HTTP/2 at the app, got "+r.Proto, http.StatusHTTPVersionNotSupported)
			return
		}
		_, _ = io.Copy(w, r.Body)
	}))
	p := startPair(t, app.port, pairOptions{})
	client := httpClient(t, p.listen, true)
	// One request first, so the concurrent ones find the connection up
	// rather than each dialing their own.
	resp, err := client.Post(appURL(app.port, "/warm-up"), "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	const streams, size = 200, 96 << 10
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range streams {
		wg.Go(func() {
			body := make([]byte, size)
			_, _ = rand.Read(body)
			resp, err := client.Post(appURL(app.port, fmt.Sprintf("/stream/%d", i)), "application/octet-stream", bytes.NewReader(body))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != 200 || resp.ProtoMajor != 2 || !bytes.Equal(got, body) {
				errs <- fmt.Errorf("stream %d: %s %s, %d bytes back (%v)", i, resp.Proto, resp.Status, len(got), err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := p.client.Metric(t, "tcp_open_total", map[string]string{"direction": "outbound", "peer": "src"}); n != 1 {
		t.Errorf("client connections = %v, want 1", n)
	}
	for _, m := range []float64{
		p.client.Metric(t, "response_total", map[string]string{"status_code": "200"}),
		p.server.Metric(t, "response_total", map[string]string{"status_code": "200"}),
	} {
		if m != streams+1 {
			t.Errorf("responses counted = %v, want %d", m, streams)
		}
	}
}
