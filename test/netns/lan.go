package netns

import (
	"fmt"
	"net/netip"
	"testing"
)

// LAN is a private network joining pods: a bridge in a namespace of its own,
// with one veth pair per pod. The subnet exists only inside the namespaces,
// so every test can use the same addresses without clashing with the host
// or with other tests.
type LAN struct {
	br     *NS
	prefix netip.Prefix
	next   netip.Addr
	ports  int
}

// NewLAN creates an empty network on prefix (e.g. 10.77.0.0/24); pods get
// addresses from .1 upward.
func NewLAN(t testing.TB, prefix netip.Prefix) *LAN {
	t.Helper()
	br := New(t, "mplan")
	br.MustRun(t, "ip", "link", "add", "br0", "type", "bridge")
	br.MustRun(t, "ip", "link", "set", "br0", "up")
	return &LAN{br: br, prefix: prefix.Masked(), next: prefix.Masked().Addr().Next()}
}

// Pod creates a namespace joined to the LAN, with the next free address on
// eth0, and returns it with that address.
func (l *LAN) Pod(t testing.TB, prefix string) (*NS, netip.Addr) {
	t.Helper()
	pod := New(t, prefix)
	addr := l.next
	l.next = l.next.Next()
	l.ports++
	port := fmt.Sprintf("p%d", l.ports)
	// The veth pair is created straight into the two namespaces, so its
	// names never meet in the host's namespace.
	l.br.MustRun(t, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", pod.Name)
	l.br.MustRun(t, "ip", "link", "set", port, "master", "br0")
	l.br.MustRun(t, "ip", "link", "set", port, "up")
	pod.MustRun(t, "ip", "addr", "add", netip.PrefixFrom(addr, l.prefix.Bits()).String(), "dev", "eth0")
	pod.MustRun(t, "ip", "link", "set", "eth0", "up")
	return pod, addr
}
