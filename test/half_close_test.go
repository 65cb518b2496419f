package test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/config"
)

// A FIN from the client reaches the server app as EOF while the server can
// still answer, and a FIN from the server reaches the client while the
// client can still send: half-close is carried through the whole chain in
// both directions.
func TestHalfCloseCarriedBothWays(t *testing.T) {
	type result struct {
		got []byte
		err error
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serverGot := make(chan result, 2)
	go func() {
		for i := 0; i < 2; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(first bool) {
				defer c.Close()
				tc := c.(*net.TCPConn)
				if first {
					// Client closes first: read to EOF, then answer.
					got, err := io.ReadAll(tc)
					serverGot <- result{got, err}
					_, _ = tc.Write([]byte("answer after your FIN"))
					_ = tc.CloseWrite()
					return
				}
				// Server closes first: greet and half-close, then read.
				_, _ = tc.Write([]byte("greeting"))
				_ = tc.CloseWrite()
				got, err := io.ReadAll(tc)
				serverGot <- result{got, err}
			}(i == 0)
		}
	}()
	// The app port is not opaque, so the client side detects; a short
	// detection timeout lets the server-first case go on as opaque quickly.
	p := startPair(t, portOf(ln), pairOptions{clientCfg: func(c *config.Config) { c.Detect.Timeout = 200 * time.Millisecond }})

	t.Run("client first", func(t *testing.T) {
		c := dialTCP(t, p.listen)
		if _, err := c.Write([]byte("request")); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		r := <-serverGot
		if r.err != nil || string(r.got) != "request" {
			t.Fatalf("server app read %q, %v; want the request then EOF", r.got, r.err)
		}
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "answer after your FIN" {
			t.Fatalf("client read %q, %v", got, err)
		}
	})
	t.Run("server first", func(t *testing.T) {
		c := dialTCP(t, p.listen)
		// The client reads the greeting and EOF before sending anything.
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "greeting" {
			t.Fatalf("client read %q, %v; want the greeting then EOF", got, err)
		}
		if _, err := c.Write([]byte("still talking")); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		r := <-serverGot
		if r.err != nil || string(r.got) != "still talking" {
			t.Fatalf("server app read %q, %v", r.got, r.err)
		}
	})
}

func dialTCP(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func portOf(ln net.Listener) uint16 { return uint16(ln.Addr().(*net.TCPAddr).Port) }
