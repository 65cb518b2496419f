//go:build linux

package kubetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// pki holds the files of the cluster's credentials, all made by
// newPKI: one CA signs the apiserver's serving certificate and the admin's
// client certificate; the service-account key signs tokens.
type pki struct {
	caCert, serverCert, serverKey    string // paths
	saKey, saPub                     string // paths
	caPEM, adminCertPEM, adminKeyPEM []byte // for the kubeconfig and rest.Config
}

// newPKI writes the credentials into dir. The serving certificate is valid
// for serverIPs, 127.0.0.1 and the names the apiserver has inside the
// cluster (serviceIP, kubernetes.default.svc…).
func newPKI(dir string, serviceIP netip.Addr, serverIPs ...netip.Addr) (*pki, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := template("kubetest-ca")
	caTmpl.IsCA, caTmpl.BasicConstraintsValid = true, true
	caTmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}

	serverTmpl := template("kube-apiserver")
	serverTmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	serverTmpl.DNSNames = []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	for _, a := range append([]netip.Addr{netip.MustParseAddr("127.0.0.1"), serviceIP}, serverIPs...) {
		serverTmpl.IPAddresses = append(serverTmpl.IPAddresses, net.IP(a.AsSlice()))
	}
	serverCertPEM, serverKeyPEM, err := issue(serverTmpl, ca, caKey)
	if err != nil {
		return nil, err
	}

	adminTmpl := template("kubetest-admin")
	adminTmpl.Subject.Organization = []string{"system:masters"} // bound to cluster-admin by RBAC's defaults
	adminTmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	adminCertPEM, adminKeyPEM, err := issue(adminTmpl, ca, caKey)
	if err != nil {
		return nil, err
	}

	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	saKeyPEM, err := keyPEM(saKey)
	if err != nil {
		return nil, err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}

	p := &pki{
		caCert:       filepath.Join(dir, "ca.crt"),
		serverCert:   filepath.Join(dir, "apiserver.crt"),
		serverKey:    filepath.Join(dir, "apiserver.key"),
		saKey:        filepath.Join(dir, "sa.key"),
		saPub:        filepath.Join(dir, "sa.pub"),
		caPEM:        pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		adminCertPEM: adminCertPEM,
		adminKeyPEM:  adminKeyPEM,
	}
	for path, data := range map[string][]byte{
		p.caCert:                        p.caPEM,
		p.serverCert:                    serverCertPEM,
		p.serverKey:                     serverKeyPEM,
		p.saKey:                         saKeyPEM,
		p.saPub:                         pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER}),
		filepath.Join(dir, "admin.crt"): adminCertPEM,
		filepath.Join(dir, "admin.key"): adminKeyPEM,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// template returns a certificate template valid from an hour ago (clock
// skew between processes is nil here, but cheap to allow) for a day.
func template(cn string) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
}

// issue signs a new P-256 key's certificate with the CA and returns both
// in PEM.
func issue(tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (certPEM, keyPEMBytes []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	keyPEMBytes, err = keyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEMBytes, nil
}

func keyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}
