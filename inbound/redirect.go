package inbound

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/detect"
	"github.com/seed722d2a70/meshproxy/internal/header"
	"github.com/seed722d2a70/meshproxy/internal/origdst"
	"github.com/seed722d2a70/meshproxy/metrics"
)

// errNoOriginalDst: the kernel could not say where a connection on the
// inbound listener was going, though it keeps track of it.
var errNoOriginalDst = errors.New("original destination unknown")

// redirectedFrom reports whether the firewall redirected conn to the
// inbound listener from another port, and from which address. A connection
// addressed to the inbound port itself is not redirected (the mesh's
// opaque traffic arrives so), nor is one the kernel keeps no connection
// tracking entry for, which no NAT rule has touched.
func (p *Proxy) redirectedFrom(conn net.Conn) (netip.AddrPort, bool, error) {
	dst, err := origdst.Get(unwrapTCP(conn))
	if errors.Is(err, origdst.ErrNoConntrack) {
		return netip.AddrPort{}, false, nil
	}
	if err != nil {
		return netip.AddrPort{}, false, fmt.Errorf("%w: %w", errNoOriginalDst, err)
	}
	local, ok := conn.LocalAddr().(*net.TCPAddr)
	if !ok || dst.Port() == uint16(local.Port) {
		return netip.AddrPort{}, false, nil
	}
	return dst, true, nil
}

// unwrapTCP returns the *net.TCPConn under conn's wrappers, or conn.
func unwrapTCP(conn net.Conn) net.Conn {
	for {
		u, ok := conn.(interface{ Unwrap() net.Conn })
		if !ok {
			return conn
		}
		conn = u.Unwrap()
	}
}

// handleRedirected carries a connection meant for the app port dst.Port():
// from a peer proxy it is mTLS offering the transport header protocol, and
// takes the mesh path; anything else is an unmeshed client's own bytes
// (plaintext, or TLS of its own), let in when the port's policy lets
// clients without a mesh identity in: served request by request when
// detection finds HTTP, so it has request metrics too (tls="no_identity"),
// forwarded untouched otherwise. On opaque ports nothing is sniffed (see
// Config.OpaquePorts).
//
// Such a connection counts as pending (pending.go) until detection has
// decided: it is as unauthenticated as a silent flood, and as cheap to
// open. A peer proxy's mTLS stays pending until its handshake and header,
// as on the inbound port; its handshake timeout starts once detection has
// decided. An unmeshed client's connection stops being pending once
// detection has seen its first bytes (or, on a port without detection, at
// once). Forwarded untouched, it is then an app connection like any the app
// would have taken without the mesh, bounded by the app's own limits, and
// must not be shed for strangers' floods to the inbound port. Served as
// HTTP, the proxy itself holds its request heads and keep-alives, so it is
// counted among the unmeshed HTTP connections and capped (pending.go).
// Detection is not shortened to the handshake timeout, so server-first
// protocols still get their full detection wait.
func (p *Proxy) handleRedirected(ctx context.Context, log *zap.Logger, pc *pendingConn, conn net.Conn, dst netip.AddrPort) {
	port := dst.Port()
	log = log.With(zap.Uint16("port", port), zap.Bool("redirected", true))
	// Before reading anything: a connection to one of the proxy's own
	// ports is refused whoever sends it.
	if err := p.cfg.Policy.checkPort(port); err != nil {
		p.refuse(log, conn, err)
		return
	}
	session := header.None
	if !p.cfg.OpaquePorts.Contains(port) && !p.cfg.Policy.Rule(port).Protocol.SkipsDetection() {
		res, c, derr := p.cfg.Detector.Detect(ctx, conn)
		conn = c
		if derr != nil { // shutting down
			_ = conn.Close()
			return
		}
		if res.TLS && slices.Contains(res.ALPN, header.ALPN) {
			p.handleMesh(ctx, log, pc, conn, port, dst.String())
			return
		}
		switch res.Protocol {
		case detect.HTTP1:
			session = header.HTTP1
		case detect.HTTP2:
			session = header.HTTP2
		}
	}
	// Detection has decided. An HTTP connection is served by the proxy
	// itself, which holds its request heads and keep-alives: it is counted
	// among the unmeshed HTTP connections, under their caps, until it
	// ends. Any other is the app's from here.
	var err error
	if session != header.None {
		err = pc.servingUnmeshed()
	} else if pc.release() {
		err = errShed
	}
	if err != nil {
		_ = conn.Close() // shed or refused by a cap, and counted then
		return
	}
	_, err = p.cfg.Policy.CheckUnauthenticated(port)
	if err != nil && session == header.None {
		p.refuse(log, conn, err)
		return
	}
	src := p.cfg.Transport.Track(conn, metrics.Labels{
		Direction: "inbound", Peer: "src", TLS: metrics.TLSNoIdentity, TargetAddr: dst.String(),
	})
	if session != header.None {
		p.serveHTTP(ctx, src, peer{}, port, session, p.httpRefusal(log, err))
		return
	}
	p.forward(ctx, log, src, peer{}, port)
}
