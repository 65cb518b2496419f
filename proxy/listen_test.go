package proxy

import (
	"net"
	"testing"
)

// An IPv4 loopback listener gets a [::1] twin on its port; other
// listeners get none.
func TestLoopback6Twin(t *testing.T) {
	for _, tt := range []struct {
		addr string
		twin bool
	}{
		{"127.0.0.1:0", true},
		{"0.0.0.0:0", false}, // dual-stack already
		{"[::1]:0", false},
	} {
		t.Run(tt.addr, func(t *testing.T) {
			ln, err := net.Listen("tcp", tt.addr)
			if err != nil {
				t.Skipf("cannot listen on %s here: %v", tt.addr, err)
			}
			defer ln.Close()
			twin, err := loopback6Twin(ln)
			if err != nil {
				t.Fatal(err)
			}
			if twin == nil {
				if tt.twin && hasIPv6Loopback() {
					t.Fatal("no twin, but this host has an IPv6 loopback")
				}
				return
			}
			defer twin.Close()
			if !tt.twin {
				t.Fatalf("twin %v for %v, want none", twin.Addr(), ln.Addr())
			}
			got, want := twin.Addr().(*net.TCPAddr), ln.Addr().(*net.TCPAddr)
			if !got.IP.Equal(net.IPv6loopback) || got.Port != want.Port {
				t.Errorf("twin on %v, want [::1]:%d", got, want.Port)
			}
			// It accepts.
			c, err := net.Dial("tcp", got.String())
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		})
	}
}

func hasIPv6Loopback() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}
