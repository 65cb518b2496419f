package outbound

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/internal/origdst"
)

// Refusals of transparent connections, each counted under a reason label.
var (
	// ErrLoop: the connection's destination is the proxy itself, so
	// carrying it would send it back through the proxy, forever. A
	// connection made to the outbound port directly (not redirected by the
	// firewall) is one.
	ErrLoop = errors.New("forwarding loop: destination is the proxy itself")
	// ErrNoOriginalDst: the kernel could not say where a redirected
	// connection was going.
	ErrNoOriginalDst = errors.New("original destination unknown")
)

// ServeTransparent accepts connections that the firewall rules of
// `meshproxy init` redirected to ln, and carries each to the destination
// the app dialed, read from the kernel (SO_ORIGINAL_DST): the transparent
// mode, where the app does not know the proxy is there. From there on a
// connection takes the same path as in explicit mode. It blocks until
// Shutdown.
func (p *Proxy) ServeTransparent(ln net.Listener) error {
	return p.srv.Serve(ln, p.handleTransparent)
}

// handleTransparent finds a redirected connection's target and hands it to
// handle.
func (p *Proxy) handleTransparent(ctx context.Context, conn net.Conn) {
	target, err := p.originalTarget(conn)
	if err != nil {
		p.cfg.Metrics.connectError(err)
		p.log.Info("connection refused", zap.Stringer("client", conn.RemoteAddr()), zap.Error(err))
		_ = conn.Close()
		return
	}
	p.handle(ctx, conn, target)
}

// originalTarget returns where conn was going before it was redirected,
// refusing destinations that are the proxy itself.
func (p *Proxy) originalTarget(conn net.Conn) (Target, error) {
	dst, err := origdst.Get(conn)
	if errors.Is(err, origdst.ErrNoConntrack) {
		// No NAT rule touched it: it was made to the listener itself.
		return Target{}, fmt.Errorf("%v: %w: %w", conn.LocalAddr(), ErrLoop, err)
	}
	if err != nil {
		return Target{}, fmt.Errorf("%w: %w", ErrNoOriginalDst, err)
	}
	if err := p.preventLoop(conn, dst); err != nil {
		return Target{}, err
	}
	return Target{Host: dst.Addr().String(), Port: dst.Port()}, nil
}

// preventLoop refuses a destination that is the proxy: the listener itself
// (a connection that was not redirected but made to the outbound port), or
// one of the proxy's own ports on a loopback address.
func (p *Proxy) preventLoop(conn net.Conn, dst netip.AddrPort) error {
	local := addrPort(conn.LocalAddr())
	if dst == local || dst.Addr().IsLoopback() && p.cfg.OwnPorts.Contains(dst.Port()) {
		return fmt.Errorf("%v: %w", dst, ErrLoop)
	}
	return nil
}

// addrPort converts a TCP address, unmapping IPv4-in-IPv6.
func addrPort(a net.Addr) netip.AddrPort {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
