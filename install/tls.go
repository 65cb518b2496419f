package install

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TLS is the injector's serving certificate and the CA that signed it,
// which becomes the webhook's caBundle. All three are PEM.
type TLS struct {
	CertPEM, KeyPEM, CAPEM []byte
}

// Validity of what NewTLS makes. The CA outlives the certificate so that a
// new certificate from the same CA (Reuse) needs no new caBundle.
const (
	DefaultCertValidity = 365 * 24 * time.Hour
	// RenewBefore is how long before its expiry a certificate is no longer
	// reused, and check warns.
	RenewBefore = 30 * 24 * time.Hour
	caValidity  = 10 * 365 * 24 * time.Hour
)

// NewTLS makes a CA and an ECDSA P-256 serving certificate for dnsNames,
// valid from now for validity.
func NewTLS(dnsNames []string, now time.Time, validity time.Duration) (*TLS, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "meshproxy injector CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: dnsNames[0]},
		DNSNames:     dnsNames,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &TLS{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		CAPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
	}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

// ErrCertMismatch is returned (wrapped) when a serving certificate does not
// verify against the CA that should have signed it.
var ErrCertMismatch = errors.New("certificate does not verify against the CA bundle")

// VerifyServing checks that certPEM is valid at now for dnsName and chains to
// a certificate of caBundle: what the apiserver checks when it calls the
// webhook.
func VerifyServing(certPEM, caBundle []byte, dnsName string, now time.Time) error {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return fmt.Errorf("%w: no PEM certificate", ErrCertMismatch)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCertMismatch, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caBundle) {
		return fmt.Errorf("%w: caBundle holds no certificate", ErrCertMismatch)
	}
	_, err = cert.Verify(x509.VerifyOptions{
		DNSName: dnsName, Roots: pool, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCertMismatch, err)
	}
	return nil
}

// FromSecret reads TLS from the injector's Secret, as a cluster holds it:
// Reuse installs keep the certificate, so that applying a new install's
// output changes nothing.
func FromSecret(s *corev1.Secret) (*TLS, error) {
	t := &TLS{CertPEM: s.Data[corev1.TLSCertKey], KeyPEM: s.Data[corev1.TLSPrivateKeyKey], CAPEM: s.Data["ca.crt"]}
	if len(t.CertPEM) == 0 || len(t.KeyPEM) == 0 || len(t.CAPEM) == 0 {
		return nil, fmt.Errorf("secret %s/%s: missing tls.crt, tls.key or ca.crt", s.Namespace, s.Name)
	}
	return t, nil
}

func tlsSecret(o *Options) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta:   typeMeta("v1", "Secret"),
		ObjectMeta: o.meta(TLSSecretName, "injector"),
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSCertKey:       o.TLS.CertPEM,
			corev1.TLSPrivateKeyKey: o.TLS.KeyPEM,
			"ca.crt":                o.TLS.CAPEM,
		},
	}
}
