package test

import (
	"bufio"
	"io"
	"net/http"
	"testing"
	"time"
)

// A CONNECT request goes to the app through both proxies; after the app's
// 200 the connection is a raw byte stream both ways, half-close included.
func TestHTTPConnectBecomesRawStream(t *testing.T) {
	app := startHTTPApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect || r.Host != "backend.example:7000" {
			http.Error(w, "want CONNECT backend.example:7000, got "+r.Method+" "+r.Host, http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = brw.WriteString("HTTP/1.1 200 Connection established\r\nX-Tunnel: yes\r\n\r\n")
		_ = brw.Flush()
		// Echo until the client half-closes, then say goodbye and close.
		_, _ = io.Copy(c, brw)
		_, _ = c.Write([]byte("bye"))
	}))
	p := startPair(t, app.port, pairOptions{})
	c := dialTCP(t, p.listen)
	// A stuck tunnel fails the test rather than hanging it.
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte("CONNECT backend.example:7000 HTTP/1.1\r\nHost: backend.example:7000\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("X-Tunnel") != "yes" {
		t.Fatalf("CONNECT answered %s %v", resp.Status, resp.Header)
	}
	// Bytes that are not HTTP at all, to show nobody parses them.
	payload := []byte("\x00\x01raw bytes\r\n\r\nGET / HTTP/1.1\r\n\xff")
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != string(payload) {
		t.Fatalf("echo %q (%v), want %q", got, err, payload)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "bye" {
		t.Errorf("after half-close: %q (%v), want %q", rest, err, "bye")
	}
	_ = c.Close()
	waitMetric(t, "the client proxy to count the CONNECT", func() bool {
		return p.client.Metric(t, "response_total", map[string]string{"status_code": "200", "authority": "backend.example:7000"}) == 1
	})
}
