package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Lifetimes of the development CA and of the SVIDs it issues.
const (
	// CALifetime is how long a CA made by NewCA is valid.
	CALifetime = 365 * 24 * time.Hour
	// DefaultSVIDTTL is the SVID lifetime NewDevSource uses when given 0.
	DefaultSVIDTTL = time.Hour
	// MinSVIDTTL is the shortest SVID lifetime a DevSource takes.
	MinSVIDTTL = time.Second
	// clockSkew is how far NotBefore is backdated, so that peers whose
	// clocks run a little behind ours accept a certificate issued just now.
	clockSkew = 30 * time.Second
)

// ErrCAExpired is returned (wrapped) by Issue when the CA has expired.
var ErrCAExpired = errors.New("dev CA expired")

// CA is a minimal SPIFFE certificate authority for development and tests:
// one self-signed ECDSA P-256 root for one trust domain, issuing X509-SVIDs
// directly (no intermediates). Its private key lives in memory; it is
// written to disk only by WriteFiles, when the user asks for it.
type CA struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  crypto.Signer
}

// NewCA creates a CA for td, valid for CALifetime.
func NewCA(td spiffeid.TrustDomain) (*CA, error) {
	if td.IsZero() {
		return nil, errors.New("dev CA: empty trust domain")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("dev CA: generating key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"meshproxy"}, CommonName: "meshproxy dev CA " + td.Name()},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // it signs leaves only
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("dev CA: signing root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("dev CA: %w", err)
	}
	return &CA{td: td, cert: cert, key: key}, nil
}

// LoadCA reads a CA written by MarshalPEM: a PEM CERTIFICATE and a PEM
// PKCS#8 (or SEC 1 "EC PRIVATE KEY") private key. The certificate must be a
// CA whose single URI SAN is the trust domain's ID, and the key must match.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("dev CA: no PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("dev CA: %w", err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("dev CA: certificate is not a CA")
	}
	if len(cert.URIs) != 1 {
		return nil, fmt.Errorf("dev CA: certificate has %d URI SANs, want 1", len(cert.URIs))
	}
	td, err := spiffeid.TrustDomainFromURI(cert.URIs[0])
	if err != nil {
		return nil, fmt.Errorf("dev CA: URI SAN: %w", err)
	}
	if cert.URIs[0].Path != "" {
		return nil, fmt.Errorf("dev CA: URI SAN %q is not a trust domain ID", cert.URIs[0])
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("dev CA: %w", err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, errors.New("dev CA: private key does not match certificate")
	}
	return &CA{td: td, cert: cert, key: key}, nil
}

// MarshalPEM returns the CA certificate and its PKCS#8 private key, PEM
// encoded, as LoadCA reads them. Keep the key secret.
func (ca *CA) MarshalPEM() (certPEM, keyPEM []byte, err error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("dev CA: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	return certPEM, keyPEM, nil
}

// TrustDomain returns the trust domain the CA issues for.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Certificate returns the CA's root certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Bundle returns the trust bundle peers need to verify the CA's SVIDs.
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.cert})
}

// Issue returns a new X509-SVID for id, valid from a little before now
// (clock skew) until ttl from now, but never beyond the CA itself. The
// leaf has a fresh ECDSA P-256 key, exactly one URI SAN, no CA bit, key
// usage digitalSignature and extended key usages server and client auth.
func (ca *CA) Issue(id spiffeid.ID, ttl time.Duration) (*x509svid.SVID, error) {
	switch {
	case !id.MemberOf(ca.td):
		return nil, fmt.Errorf("dev CA: %s is not in trust domain %s", id, ca.td)
	case id.Path() == "":
		return nil, fmt.Errorf("dev CA: %s has no path; an SVID needs one", id)
	case ttl <= 0:
		return nil, fmt.Errorf("dev CA: SVID TTL %s is not positive", ttl)
	case !time.Now().Before(ca.cert.NotAfter):
		return nil, fmt.Errorf("dev CA: %w at %s; create a new one with 'meshproxy ca init -force'",
			ErrCAExpired, ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("dev CA: generating key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(ttl)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"meshproxy"}},
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("dev CA: signing SVID: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("dev CA: %w", err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}, nil
}

// randomSerial returns a positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("dev CA: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// parsePrivateKey reads the first PEM private key block: PKCS#8
// ("PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY"),
// the encodings spiffe-helper, cert-manager and openssl write.
func parsePrivateKey(keyPEM []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, keyPEM = pem.Decode(keyPEM)
		if block == nil {
			return nil, errors.New("no PEM private key block")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("private key of type %T cannot sign", key)
		}
		return signer, nil
	}
}

// publicKeysEqual compares two public keys of any standard type.
func publicKeysEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}
