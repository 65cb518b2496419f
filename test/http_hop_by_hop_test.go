package test

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Hop-by-hop headers (RFC 9110, 7.6.1) stop at each proxy in both
// directions: Connection, the fields it names, Keep-Alive,
// Proxy-Connection, Upgrade without a switch; end-to-end headers go
// through unchanged.
func TestHTTPHopByHopHeadersStripped(t *testing.T) {
	seen := make(chan http.Header, 1)
	app := startHTTPApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		w.Header().Set("Connection", "X-App-Hop")
		w.Header().Set("X-App-Hop", "secret")
		w.Header().Set("Keep-Alive", "timeout=99")
		w.Header().Set("X-App-End", "kept")
		_, _ = io.WriteString(w, "ok")
	}))
	p := startPair(t, app.port, pairOptions{})
	c := dialTCP(t, p.listen)
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	req := "GET / HTTP/1.1\r\nHost: app\r\nConnection: keep-alive, X-Client-Hop\r\nX-Client-Hop: secret\r\n" +
		"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Client-End: kept\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	got := <-seen
	for _, h := range []string{"X-Client-Hop", "Keep-Alive", "Proxy-Connection"} {
		if v := got.Get(h); v != "" {
			t.Errorf("the app received hop-by-hop %s: %q", h, v)
		}
	}
	if v := got.Get("Connection"); strings.Contains(v, "X-Client-Hop") {
		t.Errorf("the app received Connection: %q", v)
	}
	if got.Get("X-Client-End") != "kept" {
		t.Errorf("end-to-end request header lost: %v", got)
	}
	for _, h := range []string{"X-App-Hop", "Keep-Alive"} {
		if v := resp.Header.Get(h); v != "" {
			t.Errorf("the client received hop-by-hop %s: %q", h, v)
		}
	}
	if resp.Header.Get("X-App-End") != "kept" {
		t.Errorf("end-to-end response header lost: %v", resp.Header)
	}
}
