package test

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// A thousand HTTP/1.1 requests from twenty keep-alive clients all get
// their own answer through both proxies, and both proxies count every
// request and response; the clients' twenty connections are kept alive and
// the proxies' pooled connections to the app are reused.
func TestHTTP1KeepAliveThousandRequestsCounted(t *testing.T) {
	app := startHTTPApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, body)
	}))
	p := startPair(t, app.port, pairOptions{})
	const clients, perClient = 20, 50
	var wg sync.WaitGroup
	errs := make(chan error, clients*perClient)
	for c := range clients {
		client := httpClient(t, p.listen, false)
		wg.Go(func() {
			for i := range perClient {
				id := strconv.Itoa(c*perClient + i)
				resp, err := client.Post(appURL(app.port, "/req/"+id), "text/plain", strings.NewReader("body-"+id))
				if err != nil {
					errs <- err
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if want := "POST /req/" + id + " body-" + id; err != nil || string(got) != want || resp.StatusCode != 200 {
					errs <- fmt.Errorf("request %s: %d %q (%v), want 200 %q", id, resp.StatusCode, got, err, want)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	const total = clients * perClient
	for _, side := range []struct {
		name      string
		metric    func(string, map[string]string) float64
		direction string
	}{
		{"client", func(n string, l map[string]string) float64 { return p.client.Metric(t, n, l) }, "outbound"},
		{"server", func(n string, l map[string]string) float64 { return p.server.Metric(t, n, l) }, "inbound"},
	} {
		labels := map[string]string{"direction": side.direction, "authority": fmt.Sprintf("%s:%d", appHost, app.port)}
		if n := side.metric("request_total", labels); n != total {
			t.Errorf("%s proxy request_total = %v, want %d", side.name, n, total)
		}
		ok := map[string]string{"direction": side.direction, "status_code": "200", "classification": "success"}
		if n := side.metric("response_total", ok); n != total {
			t.Errorf("%s proxy 200 responses = %v, want %d", side.name, n, total)
		}
		if n := side.metric("response_latency_ms", map[string]string{"direction": side.direction}); n != total {
			t.Errorf("%s proxy latency samples = %v, want %d", side.name, n, total)
		}
	}
	ids := map[string]string{"direction": "outbound", "tls": "true", "server_id": "spiffe://mesh.test/server"}
	if n := p.client.Metric(t, "request_total", ids); n != total {
		t.Errorf("client proxy requests labelled with the server's identity = %v, want %d", n, total)
	}
	ids = map[string]string{"direction": "inbound", "tls": "true", "client_id": "spiffe://mesh.test/client"}
	if n := p.server.Metric(t, "request_total", ids); n != total {
		t.Errorf("server proxy requests labelled with the client's identity = %v, want %d", n, total)
	}
	if n := p.client.Metric(t, "tcp_open_total", map[string]string{"direction": "outbound", "peer": "src"}); n != clients {
		t.Errorf("client connections = %v, want %d (keep-alive)", n, clients)
	}
	if n := app.conns.Load(); n > 2*clients {
		t.Errorf("the app accepted %d connections for %d requests, want at most %d (pooled)", n, total, 2*clients)
	}
}
