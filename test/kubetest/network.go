//go:build linux

package kubetest

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/seed722d2a70/meshproxy/test/netns"
)

// linkRange is where the host–node links take their /30s: the benchmarking
// range (RFC 2544), which real networks leave alone.
var linkRange = netip.MustParsePrefix("198.18.0.0/15")

// linkNode joins the host namespace to the node's with a veth pair on a
// /30 no other interface of the host overlaps, and returns the host's end
// (where the apiserver listens) and the node's (its InternalIP). Deleting
// the node's namespace deletes the pair.
func linkNode(t testing.TB, node *netns.NS) (hostIP, nodeIP netip.Addr) {
	t.Helper()
	// Test binaries of several packages make links at once: choosing and
	// assigning a subnet is one step under a lock all of them share.
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "meshproxy-kubetest-links.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	subnet, err := freeSubnet()
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	hostIP = subnet.Addr().Next()
	nodeIP = hostIP.Next()
	var b [4]byte
	_, _ = rand.Read(b[:])
	hostIf := "kt" + hex.EncodeToString(b[:]) // unique in the host, at most 15 bytes
	run(t, "ip", "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", node.Name)
	run(t, "ip", "addr", "add", netip.PrefixFrom(hostIP, 30).String(), "dev", hostIf)
	run(t, "ip", "link", "set", hostIf, "up")
	node.MustRun(t, "ip", "addr", "add", netip.PrefixFrom(nodeIP, 30).String(), "dev", "eth0")
	node.MustRun(t, "ip", "link", "set", "eth0", "up")
	return hostIP, nodeIP
}

// freeSubnet draws /30s from linkRange at random until one overlaps no
// address of the host.
func freeSubnet() (netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Prefix{}, err
	}
	var used []netip.Prefix
	for _, a := range addrs {
		if ipnet, ok := a.(*net.IPNet); ok {
			ip, _ := netip.AddrFromSlice(ipnet.IP)
			ones, _ := ipnet.Mask.Size()
			used = append(used, netip.PrefixFrom(ip.Unmap(), ones).Masked())
		}
	}
	base := binary.BigEndian.Uint32(linkRange.Addr().AsSlice())
	blocks := uint32(1) << (32 - linkRange.Bits() - 2)
next:
	for range 100 {
		var r [4]byte
		_, _ = rand.Read(r[:])
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], base+4*(binary.BigEndian.Uint32(r[:])%blocks))
		subnet := netip.PrefixFrom(netip.AddrFrom4(a), 30)
		for _, u := range used {
			if u.Overlaps(subnet) {
				continue next
			}
		}
		return subnet, nil
	}
	return netip.Prefix{}, fmt.Errorf("no free /30 in %s", linkRange)
}

// setUpNode makes the node a router for its pods: it forwards, routes
// Service ClusterIPs toward the host (so that connections the node itself
// opens to them reach the OUTPUT chain, where kube-proxy's DNAT rules
// are), and masquerades pods' packets to the host, which has no route to
// pods.
func (c *Cluster) setUpNode(t testing.TB) {
	t.Helper()
	c.Node.MustRun(t, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	c.Node.MustRun(t, "ip", "route", "add", c.opts.ServiceCIDR.Masked().String(), "via", c.apiIP.String())
	c.Node.MustRun(t, "iptables", "-w", "-t", "nat", "-A", "POSTROUTING",
		"-s", c.opts.ClusterCIDR.Masked().String(), "-o", "eth0", "-j", "MASQUERADE")
}

// plugPod joins a pod's namespace to the node with a veth pair on the
// pod's /30: the pod's end has its IP and a default route via the node's
// end.
func (c *Cluster) plugPod(t testing.TB, pod *netns.NS, block netip.Prefix, ip netip.Addr) {
	t.Helper()
	gw := block.Addr().Next()
	if gw == ip {
		gw = gw.Next()
	}
	c.mu.Lock()
	c.links++
	nodeIf := fmt.Sprintf("vp%d", c.links)
	c.mu.Unlock()
	c.Node.MustRun(t, "ip", "link", "add", nodeIf, "type", "veth", "peer", "name", "eth0", "netns", pod.Name)
	c.Node.MustRun(t, "ip", "addr", "add", netip.PrefixFrom(gw, 30).String(), "dev", nodeIf)
	c.Node.MustRun(t, "ip", "link", "set", nodeIf, "up")
	pod.MustRun(t, "ip", "addr", "add", netip.PrefixFrom(ip, 30).String(), "dev", "eth0")
	pod.MustRun(t, "ip", "link", "set", "eth0", "up")
	pod.MustRun(t, "ip", "route", "add", "default", "via", gw.String())
}

// ipam hands out the cluster CIDR's /30 blocks, one per pod.
type ipam struct {
	cidr netip.Prefix
	used map[netip.Prefix]bool
}

func newIPAM(cidr netip.Prefix) ipam {
	return ipam{cidr: cidr, used: map[netip.Prefix]bool{}}
}

// allocate returns the first free block and the pod's address in it (the
// second host address: the first is the node's end of the link).
func (m *ipam) allocate() (netip.Prefix, netip.Addr, error) {
	for a := m.cidr.Addr(); m.cidr.Contains(a); {
		block := netip.PrefixFrom(a, 30)
		if !m.used[block] {
			m.used[block] = true
			return block, a.Next().Next(), nil
		}
		for range 4 {
			a = a.Next()
		}
	}
	return netip.Prefix{}, netip.Addr{}, fmt.Errorf("no free /30 left in %s", m.cidr)
}

// reserve marks the block of a chosen IP used; the IP must be one of its
// two host addresses.
func (m *ipam) reserve(ip netip.Addr) (netip.Prefix, error) {
	if !ip.Is4() {
		return netip.Prefix{}, fmt.Errorf("pod IP %s: only IPv4 is supported", ip)
	}
	block, _ := ip.Prefix(30)
	if ip == block.Addr() || ip == block.Addr().Next().Next().Next() {
		return netip.Prefix{}, fmt.Errorf("pod IP %s is the network or broadcast address of its /30 %s", ip, block)
	}
	if m.used[block] {
		return netip.Prefix{}, fmt.Errorf("pod IP %s: its /30 %s is another pod's", ip, block)
	}
	m.used[block] = true
	return block, nil
}

func (m *ipam) release(block netip.Prefix) { delete(m.used, block) }

// run runs a command in the host namespace, failing t on error.
func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}
