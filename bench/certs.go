package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/seed722d2a70/meshproxy/identity"
)

// TrustDomain is the trust domain of the run's dev CA.
const TrustDomain = "bench.local"

// CertFiles are one side's SVID in the files the peers read.
type CertFiles struct {
	Cert     string // the certificate chain (PEM)
	Key      string // the private key (PKCS#8 PEM)
	Bundle   string // the trust bundle: the CA certificate (PEM)
	Combined string // certificate chain then key, for haproxy's crt
	ID       string // the SPIFFE ID
}

// PairCerts are the SVIDs of the client-side and server-side proxies.
type PairCerts struct {
	Client, Server CertFiles
}

// NewCA creates the run's dev CA in dir/ca (for meshproxy's --ca-dir) and
// issues the client and server SVIDs (ECDSA P-256) the other contenders
// use, so every contender trusts the same root.
func NewCA(dir string) (caDir string, certs PairCerts, err error) {
	td := spiffeid.RequireTrustDomainFromString(TrustDomain)
	ca, err := identity.NewCA(td)
	if err != nil {
		return "", PairCerts{}, err
	}
	caDir = filepath.Join(dir, "ca")
	if err := ca.WriteFiles(caDir); err != nil {
		return "", PairCerts{}, err
	}
	issue := func(side string) (CertFiles, error) {
		id := spiffeid.RequireFromPath(td, "/"+side)
		svid, err := ca.Issue(id, 24*time.Hour)
		if err != nil {
			return CertFiles{}, err
		}
		out := filepath.Join(dir, "certs-"+side)
		if err := identity.WriteSVIDFiles(out, svid, ca.Bundle()); err != nil {
			return CertFiles{}, err
		}
		f := CertFiles{
			Cert:     filepath.Join(out, identity.SVIDFileName),
			Key:      filepath.Join(out, identity.SVIDKeyFileName),
			Bundle:   filepath.Join(out, identity.BundleFileName),
			Combined: filepath.Join(out, "combined.pem"),
			ID:       id.String(),
		}
		certPEM, err := os.ReadFile(f.Cert)
		if err != nil {
			return CertFiles{}, err
		}
		keyPEM, err := os.ReadFile(f.Key)
		if err != nil {
			return CertFiles{}, err
		}
		if err := os.WriteFile(f.Combined, append(certPEM, keyPEM...), 0o600); err != nil {
			return CertFiles{}, fmt.Errorf("combined PEM: %w", err)
		}
		return f, nil
	}
	if certs.Client, err = issue("client"); err != nil {
		return "", PairCerts{}, err
	}
	if certs.Server, err = issue("server"); err != nil {
		return "", PairCerts{}, err
	}
	return caDir, certs, nil
}
