package outbound

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/seed722d2a70/meshproxy/identity"
	"github.com/seed722d2a70/meshproxy/internal/header"
)

// ErrNotMeshproxy is returned when a meshed destination's TLS server did not
// negotiate the transport header protocol: whatever answered on the inbound
// port is not a meshproxy inbound proxy (or is a version without it).
var ErrNotMeshproxy = errors.New("peer did not negotiate the transport header protocol")

// dial connects opaque traffic to route's destination. For a meshed route
// it completes the mTLS handshake, which authorizes the peer's SPIFFE ID,
// and sends the transport header carrying the target port; it returns the
// peer's ID, and the route dialed: route itself, or for a resolved
// destination the endpoint it chose (resolve.go).
func (p *Proxy) dial(ctx context.Context, route Route) (net.Conn, string, Route, error) {
	if route.Endpoints != nil {
		return p.dialBalanced(ctx, route)
	}
	c, id, err := p.dialSession(ctx, route, header.None)
	return c, id, route, err
}

// dialSession is dial with the session protocol the header announces.
func (p *Proxy) dialSession(ctx context.Context, route Route, proto header.SessionProtocol) (net.Conn, string, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	release, err := p.slots.acquire(ctx, route.DialAddr)
	if err != nil {
		return nil, "", err
	}
	defer release()
	raw, err := p.dialer.DialContext(ctx, "tcp", route.DialAddr)
	if err != nil {
		return nil, "", err
	}
	if !route.Meshed {
		return raw, "", nil
	}
	tc := tls.Client(raw, route.TLS)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, "", fmt.Errorf("mTLS handshake with %s: %w", route.DialAddr, err)
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != header.ALPN {
		_ = tc.Close()
		return nil, "", fmt.Errorf("%s: %w", route.DialAddr, ErrNotMeshproxy)
	}
	id, err := identity.PeerID(cs)
	if err != nil {
		_ = tc.Close()
		return nil, "", err
	}
	// The header goes in its own write, so into one TLS record, before any
	// of the app's bytes; the inbound reads exactly the header and no more.
	if err := header.Write(tc, header.Header{Port: route.Target.Port, SessionProtocol: proto}); err != nil {
		_ = tc.Close()
		return nil, "", fmt.Errorf("sending transport header to %s: %w", route.DialAddr, err)
	}
	return tc, id.String(), nil
}
