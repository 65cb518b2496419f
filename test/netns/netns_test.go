package netns_test

import (
	"io"
	"net"
	"testing"

	"github.com/seed722d2a70/meshproxy/test/netns"
)

// Sockets opened through an NS belong to it: a listener in one namespace
// is reachable from a dial in the same namespace and not from another.
func TestSocketsBelongToTheirNamespace(t *testing.T) {
	netns.Require(t)
	a, b := netns.New(t, "mpnsa"), netns.New(t, "mpnsb")
	for _, tc := range []struct{ listen, dial string }{
		{"127.0.0.1:4191", "127.0.0.1:4191"},
		{"[::1]:4192", "[::1]:4192"},
		{"0.0.0.0:4193", "127.0.0.1:4193"}, // dual-stack wildcard
	} {
		ln, err := a.Listen("tcp", tc.listen)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err == nil {
				_, _ = c.Write([]byte("a"))
				c.Close()
			}
		}()
		c, err := a.Dial("tcp", tc.dial)
		if err != nil {
			t.Fatalf("dial %s in the same namespace: %v", ln.Addr(), err)
		}
		got, _ := io.ReadAll(c)
		c.Close()
		if string(got) != "a" {
			t.Errorf("read %q from %s", got, tc.dial)
		}
		if c, err := b.Dial("tcp", tc.dial); err == nil {
			c.Close()
			t.Errorf("dial %s from another namespace succeeded", tc.dial)
		}
		if c, err := net.Dial("tcp", tc.dial); err == nil {
			// The host may happen to listen there; only a listener of
			// ours answering "a" would be wrong.
			got, _ := io.ReadAll(c)
			c.Close()
			if string(got) == "a" {
				t.Errorf("dial %s from the host reached the namespace's listener", tc.dial)
			}
		}
	}
}
