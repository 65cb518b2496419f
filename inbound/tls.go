package inbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/seed722d2a70/meshproxy/identity"
	"github.com/seed722d2a70/meshproxy/internal/header"
)

// Handshake refusals that are not identity decisions.
var (
	// ErrPlaintext: the peer did not speak TLS on the inbound port.
	ErrPlaintext = errors.New("plaintext connection on the mTLS port")
	// ErrNoTransportHeader: the peer did not negotiate the transport
	// header protocol, so there is no port to forward to.
	ErrNoTransportHeader = errors.New("peer did not negotiate the transport header protocol")
)

// peer is the verified identity of the proxy at the other end.
type peer struct {
	ID     spiffeid.ID
	Chains [][]*x509.Certificate
}

// serverTLS returns base with the transport header's ALPN protocol added.
func serverTLS(base *tls.Config) *tls.Config {
	cfg := base.Clone()
	if !slices.Contains(cfg.NextProtos, header.ALPN) {
		cfg.NextProtos = append(cfg.NextProtos, header.ALPN)
	}
	return cfg
}

// handshake completes the mTLS handshake within HandshakeTimeout. The TLS
// configuration verifies the peer's SVID against the trust bundle on every
// handshake, resumed or not; here we only read the result.
func (p *Proxy) handshake(ctx context.Context, conn net.Conn) (*tls.Conn, peer, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.HandshakeTimeout)
	defer cancel()
	tc := tls.Server(conn, p.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		var rh tls.RecordHeaderError
		if errors.As(err, &rh) {
			return nil, peer{}, fmt.Errorf("%w: %w", ErrPlaintext, err)
		}
		return nil, peer{}, fmt.Errorf("mTLS handshake: %w", err)
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != header.ALPN {
		return tc, peer{}, ErrNoTransportHeader
	}
	id, err := identity.PeerID(cs)
	if err != nil {
		return tc, peer{}, err
	}
	return tc, peer{ID: id, Chains: [][]*x509.Certificate{cs.PeerCertificates}}, nil
}
