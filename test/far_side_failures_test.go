package test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// Failures on the far side reach the client as a closed connection, never
// a hang: the app's port has nothing listening, the app resets the
// connection mid-stream, or the peer proxy is down.
func TestFarSideFailuresCloseTheClient(t *testing.T) {
	t.Run("nothing listening on the app port", func(t *testing.T) {
		p := startPair(t, freePort(t), pairOptions{opaque: true})
		assertClosedWithoutData(t, p.listen)
		meshtest.Eventually(t, "the server proxy to count the unreachable workload", func() bool {
			return p.server.Metric(t, "inbound_tls_refused_total", map[string]string{"reason": "workload_unreachable"}) == 1
		})
	})
	t.Run("app resets mid-stream", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.ReadFull(c, make([]byte, 5))
			_, _ = c.Write([]byte("partial"))
			_ = c.(*net.TCPConn).SetLinger(0) // close with RST
			_ = c.Close()
		}()
		p := startPair(t, portOf(ln), pairOptions{opaque: true})
		c := dialTCP(t, p.listen)
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		if isTimeout(err) {
			t.Fatalf("client hung after the app reset (read %q)", got)
		}
		if string(got) != "partial" {
			t.Errorf("client read %q before the close, want %q", got, "partial")
		}
	})
	t.Run("peer proxy down", func(t *testing.T) {
		p := startPair(t, echoApp(t), pairOptions{opaque: true})
		<-p.server.Shutdown()
		assertClosedWithoutData(t, p.listen)
		meshtest.Eventually(t, "the client proxy to count the failed dial", func() bool {
			return p.client.Metric(t, "outbound_connect_errors_total", map[string]string{"reason": "connection_refused"}) == 1
		})
	})
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
