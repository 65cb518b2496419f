// Package origdst reads where a TCP connection was going before the
// firewall redirected it to the proxy. iptables' REDIRECT target rewrites
// the destination of a connection to a local port, and the kernel's
// connection tracking keeps the original; the SO_ORIGINAL_DST socket option
// (IP6T_SO_ORIGINAL_DST for IPv6) reads it back from the accepted socket.
// This is how a transparent proxy learns the address the application meant
// to reach.
package origdst

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrNoConntrack is returned (wrapped) when the kernel keeps no connection
// tracking entry for the connection: nothing redirected it (and conntrack
// is not loaded), so there is no original destination other than the local
// address.
var ErrNoConntrack = errors.New("no connection tracking entry")

// ErrUnsupported is returned (wrapped) for a connection that is not a TCP
// socket: a pipe, a TLS conn or any other wrapper must be unwrapped first.
var ErrUnsupported = errors.New("original destination needs a *net.TCPConn")

// Get returns the original destination of c, which must be the TCP
// connection as accepted. For a connection that was not redirected it is
// c's local address. IPv4 connections accepted on a dual-stack socket are
// handled: the answer is a plain IPv4 address.
func Get(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%w, not %T", ErrUnsupported, c)
	}
	local, ok := tc.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%w: local address %v", ErrUnsupported, tc.LocalAddr())
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	v4 := local.AddrPort().Addr().Unmap().Is4()
	var (
		dst  netip.AddrPort
		gerr error
	)
	if err := raw.Control(func(fd uintptr) {
		if v4 {
			dst, gerr = getV4(int(fd))
		} else {
			dst, gerr = getV6(int(fd))
		}
	}); err != nil {
		return netip.AddrPort{}, err
	}
	if errors.Is(gerr, syscall.ENOENT) {
		return netip.AddrPort{}, fmt.Errorf("original destination of %v: %w: %w", c.RemoteAddr(), ErrNoConntrack, gerr)
	}
	if gerr != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination of %v: %w", c.RemoteAddr(), gerr)
	}
	return dst, nil
}

// getV4 reads SO_ORIGINAL_DST, a struct sockaddr_in. x/sys has no getter
// for a sockaddr; IPv6Mreq is a 20-byte buffer the 16-byte answer fits in,
// the usual way to borrow one.
func getV4(fd int) (netip.AddrPort, error) {
	m, err := unix.GetsockoptIPv6Mreq(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST)
	if err != nil {
		return netip.AddrPort{}, err
	}
	b := m.Multiaddr[:] // sockaddr_in: family(2) port(2, big endian) addr(4) zero(8)
	port := binary.BigEndian.Uint16(b[2:4])
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), nil
}

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST from
// <linux/netfilter_ipv6/ip6_tables.h>, which x/sys/unix does not define.
const ip6tSOOriginalDst = 80

// getV6 reads IP6T_SO_ORIGINAL_DST, a struct sockaddr_in6, into the
// sockaddr at the start of IPv6MTUInfo (which has the same layout).
func getV6(fd int) (netip.AddrPort, error) {
	info, err := unix.GetsockoptIPv6MTUInfo(fd, unix.SOL_IPV6, ip6tSOOriginalDst)
	if err != nil {
		return netip.AddrPort{}, err
	}
	sa := info.Addr
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port), nil
}
