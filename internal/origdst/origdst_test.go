package origdst_test

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/seed722d2a70/meshproxy/internal/origdst"
	"github.com/seed722d2a70/meshproxy/test/netns"
)

func TestNotATCPConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := origdst.Get(a); !errors.Is(err, origdst.ErrUnsupported) {
		t.Fatalf("Get(pipe) = %v, want ErrUnsupported", err)
	}
}

// In a namespace of its own, a REDIRECT rule sends connections for port
// 7777 to a listener on 9000; the accepted connection's original
// destination is the address the client dialed, for IPv4 and IPv6, on
// single- and dual-stack listeners. A connection dialed to the listener
// directly reports the listener's own address.
func TestRedirectedConnection(t *testing.T) {
	for _, tc := range []struct {
		name, cmd, network, listen, dial, want string
	}{
		{"ipv4", "iptables", "tcp4", "127.0.0.1:9000", "127.0.0.1:7777", "127.0.0.1:7777"},
		{"ipv4 on dual-stack listener", "iptables", "tcp", ":9000", "127.0.0.1:7777", "127.0.0.1:7777"},
		{"ipv6", "ip6tables", "tcp6", "[::1]:9000", "[::1]:7777", "[::1]:7777"},
		{"ipv6 on dual-stack listener", "ip6tables", "tcp", ":9000", "[::1]:7777", "[::1]:7777"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			netns.Require(t, tc.cmd)
			ns := netns.New(t, "mporig")
			ns.MustRun(t, tc.cmd, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "7777", "-j", "REDIRECT", "--to-ports", "9000")
			ln, err := ns.Listen(tc.network, tc.listen)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()

			check := func(dial, want string) {
				t.Helper()
				c, err := ns.Dial("tcp", dial)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				s, err := ln.Accept()
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				got, err := origdst.Get(s)
				if err != nil {
					t.Fatalf("Get: %v", err)
				}
				if got != netip.MustParseAddrPort(want) {
					t.Errorf("dialed %s, accepted on %v: original destination %v, want %s", dial, s.LocalAddr(), got, want)
				}
			}
			check(tc.dial, tc.want)
			direct := netip.MustParseAddrPort(tc.want)
			direct = netip.AddrPortFrom(direct.Addr(), 9000)
			check(direct.String(), direct.String())
		})
	}
}
