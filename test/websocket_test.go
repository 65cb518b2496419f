package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// A WebSocket upgrade goes through both proxies: the 101 switches the
// exchange to a raw two-way stream, and messages, small and large, echo
// back intact. Both proxies count the exchange with status 101.
func TestWebSocketEchoThroughTheMesh(t *testing.T) {
	app := startHTTPApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(4 << 20)
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, msg); err != nil {
				return
			}
		}
	}))
	p := startPair(t, app.port, pairOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://"+appURL(app.port, "/ws")[len("http://"):], &websocket.DialOptions{
		HTTPClient: httpClient(t, p.listen, false),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	c.SetReadLimit(4 << 20)
	big := make([]byte, 2<<20)
	_, _ = rand.Read(big)
	for i, msg := range [][]byte{[]byte("hello"), big, []byte("bye")} {
		if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Errorf("message %d: %d bytes back, want %d identical", i, len(got), len(msg))
		}
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("close: %v", err)
	}
	for name, px := range map[string]interface {
		Metric(testing.TB, string, map[string]string) float64
	}{"client": p.client, "server": p.server} {
		// Counted when the stream ends, which each proxy sees a moment
		// after the close handshake.
		waitMetric(t, name+" proxy to count the 101", func() bool {
			return px.Metric(t, "response_total", map[string]string{"status_code": "101"}) == 1
		})
	}
}

// waitMetric polls cond until it holds or 10 s pass.
func waitMetric(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
