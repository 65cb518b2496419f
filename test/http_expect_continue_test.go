package test

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Expect: 100-continue works end to end: the client gets 100 Continue only
// once the app asked for the body, and an app that refuses the request
// answers without the body ever being sent.
func TestHTTPExpectContinue(t *testing.T) {
	var bodiesRead atomic.Int32
	app := startHTTPApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refuse" {
			http.Error(w, "no thanks", http.StatusForbidden)
			return
		}
		body, _ := io.ReadAll(r.Body) // makes the server send 100 Continue
		bodiesRead.Add(1)
		_, _ = w.Write(append([]byte("got "), body...))
	}))
	p := startPair(t, app.port, pairOptions{})

	t.Run("accepted", func(t *testing.T) {
		c := dialTCP(t, p.listen)
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(c, "POST /accept HTTP/1.1\r\nHost: app\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
			t.Fatalf("first line %q (%v), want 100 Continue", line, err)
		}
		if _, err := br.ReadString('\n'); err != nil { // the blank line ending the 100
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, "hello"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "got hello" {
			t.Errorf("%s %q, want 200 %q", resp.Status, body, "got hello")
		}
	})
	t.Run("refused without the body", func(t *testing.T) {
		before := bodiesRead.Load()
		c := dialTCP(t, p.listen)
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(c, "POST /refuse HTTP/1.1\r\nHost: app\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("status %s, want 403 without a 100 first", resp.Status)
		}
		if bodiesRead.Load() != before {
			t.Error("the app read a body")
		}
	})
}
