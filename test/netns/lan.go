package netns

import (
	"fmt"
	"net/netip"
	"testing"
)

// LAN is a private network joining pods: a bridge in a namespace of its own,
// with one veth pair per pod. The subnets exist only inside the namespaces,
// so every test can use the same addresses without clashing with the host
// or with other tests.
type LAN struct {
	br       *NS
	prefixes []netip.Prefix
	next     []netip.Addr
	ports    int
}

// NewLAN creates an empty network on the given subnets (e.g. 10.77.0.0/24,
// or that and fd77::/64 for a dual-stack LAN); pods get addresses from .1
// (::1) upward, one in each subnet.
func NewLAN(t testing.TB, prefixes ...netip.Prefix) *LAN {
	t.Helper()
	br := New(t, "mplan")
	br.MustRun(t, "ip", "link", "add", "br0", "type", "bridge")
	br.MustRun(t, "ip", "link", "set", "br0", "up")
	l := &LAN{br: br}
	for _, p := range prefixes {
		l.prefixes = append(l.prefixes, p.Masked())
		l.next = append(l.next, p.Masked().Addr().Next())
	}
	return l
}

// Pod creates a namespace joined to the LAN, with the next free address of
// each subnet on eth0, and returns it with those addresses, in the order of
// the subnets.
func (l *LAN) Pod(t testing.TB, prefix string) (*NS, []netip.Addr) {
	t.Helper()
	pod := New(t, prefix)
	addrs := make([]netip.Addr, len(l.next))
	for i := range l.next {
		addrs[i] = l.next[i]
		l.next[i] = l.next[i].Next()
	}
	l.ports++
	port := fmt.Sprintf("p%d", l.ports)
	// The veth pair is created straight into the two namespaces, so its
	// names never meet in the host's namespace.
	l.br.MustRun(t, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", pod.Name)
	l.br.MustRun(t, "ip", "link", "set", port, "master", "br0")
	l.br.MustRun(t, "ip", "link", "set", port, "up")
	for i, a := range addrs {
		// nodad: an IPv6 address is usable at once, without duplicate
		// address detection on a LAN where it cannot be duplicated.
		pod.MustRun(t, "ip", "addr", "add", netip.PrefixFrom(a, l.prefixes[i].Bits()).String(), "dev", "eth0", "nodad")
	}
	pod.MustRun(t, "ip", "link", "set", "eth0", "up")
	return pod, addrs
}
