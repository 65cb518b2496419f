package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// DefaultSessionCacheSize is the number of TLS sessions a ClientConfig
// remembers for resumption when not given a cache.
const DefaultSessionCacheSize = 1024

// TLSOption adjusts the configurations built by ServerConfig and
// ClientConfig.
type TLSOption func(*tlsOptions)

type tlsOptions struct {
	nextProtos      []string
	sessionCache    tls.ClientSessionCache
	sessionCacheSet bool
}

// WithNextProtos sets the ALPN protocols offered (client) or accepted
// (server), most preferred first.
func WithNextProtos(protos ...string) TLSOption {
	return func(o *tlsOptions) { o.nextProtos = append([]string(nil), protos...) }
}

// WithSessionCache makes a ClientConfig use c to resume sessions, e.g. one
// cache shared by every client configuration of a proxy. Nil disables
// resumption. The default is a new LRU cache of DefaultSessionCacheSize.
func WithSessionCache(c tls.ClientSessionCache) TLSOption {
	return func(o *tlsOptions) { o.sessionCache, o.sessionCacheSet = c, true }
}

// ServerConfig returns a TLS 1.3 server configuration for mutual TLS with
// SPIFFE identities. It presents src's current SVID on each new handshake
// (so a rotation reaches new connections at once and leaves established
// ones alone; sessions from before a change of src are not resumed, see
// resume.go), requires a client certificate, and on every handshake,
// resumed or not, verifies the client's SVID against src's bundle for the
// client's trust domain and passes its ID to authorize. A nil authorize
// refuses every client.
//
// crypto/tls's own verification is WebPKI (host names, a fixed root pool),
// which does not apply to SVIDs; it is therefore turned off (ClientAuth
// RequestClientCert) and replaced by SPIFFE verification in
// VerifyConnection, which also refuses a client that sent no certificate,
// as ErrNoIdentity, so that the refusal is counted under its own reason. VerifyConnection rather than VerifyPeerCertificate,
// because crypto/tls skips the latter on resumed sessions: a client whose
// authorization was withdrawn must not get back in by resuming.
//
// Handshake errors wrap ErrNoIdentity, ErrUntrusted (and ErrExpired),
// ErrUnauthorized or ErrNotReady; see RefusalReason. Do not set
// VerifyPeerCertificate, InsecureSkipVerify or ClientAuth on the result.
func ServerConfig(src Source, authorize tlsconfig.Authorizer, opts ...TLSOption) *tls.Config {
	o := applyTLSOptions(opts)
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return currentCertificate(src)
		},
		VerifyConnection: verifyConnection(src, authorize),
		NextProtos:       o.nextProtos,
	}
	resumeWithinEpoch(cfg, epoch(src))
	return cfg
}

// ClientConfig returns a TLS 1.3 client configuration for mutual TLS with
// SPIFFE identities: the counterpart of ServerConfig. It presents src's
// current SVID when the server asks, verifies the server's SVID against
// src's bundles and authorizes its ID on every handshake, resumed or not,
// and keeps sessions for resumption so that reconnecting to a peer proxy
// skips the public-key operations of a full handshake.
//
// InsecureSkipVerify is set only to turn off crypto/tls's WebPKI checks
// (a SPIFFE peer has no DNS name to check); VerifyConnection does the SPIFFE
// verification instead, on resumed handshakes too. ServerName is not
// needed. A nil authorize refuses every server.
func ClientConfig(src Source, authorize tlsconfig.Authorizer, opts ...TLSOption) *tls.Config {
	o := applyTLSOptions(opts)
	cache := o.sessionCache
	if !o.sessionCacheSet {
		cache = tls.NewLRUClientSessionCache(DefaultSessionCacheSize)
	}
	if cache != nil {
		cache = epochCache{cache, epoch(src)}
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by VerifyConnection; see above
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return currentCertificate(src)
		},
		VerifyConnection:   verifyConnection(src, authorize),
		ClientSessionCache: cache,
		NextProtos:         o.nextProtos,
	}
}

func applyTLSOptions(opts []TLSOption) tlsOptions {
	var o tlsOptions
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// currentCertificate returns src's SVID as crypto/tls wants it; sources of
// this package keep it ready-made.
func currentCertificate(src Source) (*tls.Certificate, error) {
	if s, ok := src.(interface {
		certificate() (*tls.Certificate, error)
	}); ok {
		return s.certificate()
	}
	svid, err := src.GetX509SVID()
	if err != nil {
		return nil, err
	}
	return tlsCertificate(svid)
}

func verifyConnection(bundles x509bundle.Source, authorize tlsconfig.Authorizer) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		_, err := VerifyPeer(cs.PeerCertificates, bundles, authorize)
		return err
	}
}

// VerifyPeer verifies a peer's certificate chain (leaf first) as an
// X509-SVID against the bundle of the peer's trust domain, now, and then
// authorizes its SPIFFE ID. The TLS configurations of this package call it
// on every handshake; it is exported for callers that verify chains
// obtained otherwise. Errors wrap ErrNoIdentity, ErrUntrusted (with
// ErrExpired for validity periods) or ErrUnauthorized.
func VerifyPeer(certs []*x509.Certificate, bundles x509bundle.Source, authorize tlsconfig.Authorizer) (spiffeid.ID, error) {
	if len(certs) == 0 {
		return spiffeid.ID{}, fmt.Errorf("%w: no certificate", ErrNoIdentity)
	}
	leaf := certs[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %w", ErrNoIdentity, err)
	}
	if now := time.Now(); now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return id, fmt.Errorf("%w: %w: %s: certificate valid from %s to %s",
			ErrUntrusted, ErrExpired, id, leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	_, chains, err := x509svid.Verify(certs, bundles)
	if err != nil {
		var invalid x509.CertificateInvalidError
		if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
			return id, fmt.Errorf("%w: %w: %s: %w", ErrUntrusted, ErrExpired, id, err)
		}
		if errors.Is(err, ErrUntrusted) { // no bundle: already wrapped
			return id, fmt.Errorf("%s: %w", id, err)
		}
		return id, fmt.Errorf("%w: %s: %w", ErrUntrusted, id, err)
	}
	if authorize == nil {
		return id, fmt.Errorf("%w: %s: no authorizer configured", ErrUnauthorized, id)
	}
	if err := authorize(id, chains); err != nil {
		return id, fmt.Errorf("%w: %s: %w", ErrUnauthorized, id, err)
	}
	return id, nil
}

// PeerID returns the SPIFFE ID of the peer of an established connection
// made with ServerConfig or ClientConfig, whose handshake already verified
// and authorized it. Errors wrap ErrNoIdentity.
func PeerID(cs tls.ConnectionState) (spiffeid.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, fmt.Errorf("%w: no certificate", ErrNoIdentity)
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %w", ErrNoIdentity, err)
	}
	return id, nil
}
