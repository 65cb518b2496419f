package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestNewCA(t *testing.T) {
	ca := newTestCA(t, tdExample)
	c := ca.Certificate()
	if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("root is not a CA")
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://example.org" {
		t.Errorf("URI SANs %v, want [spiffe://example.org]", c.URIs)
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", c.PublicKey)
	}
	if d := c.NotAfter.Sub(c.NotBefore); d < CALifetime || d > CALifetime+time.Hour {
		t.Errorf("lifetime %s, want about %s", d, CALifetime)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("root is not self-signed: %v", err)
	}
	if _, err := NewCA(spiffeid.TrustDomain{}); err == nil {
		t.Error("NewCA accepted an empty trust domain")
	}
}

func TestIssue(t *testing.T) {
	ca := newTestCA(t, tdExample)
	before := time.Now()
	svid, err := ca.Issue(idClient, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	leaf := svid.Certificates[0]
	switch {
	case svid.ID != idClient:
		t.Errorf("ID %s", svid.ID)
	case len(leaf.URIs) != 1 || leaf.URIs[0].String() != idClient.String():
		t.Errorf("URI SANs %v", leaf.URIs)
	case leaf.IsCA:
		t.Error("leaf has the CA bit")
	case leaf.KeyUsage != x509.KeyUsageDigitalSignature:
		t.Errorf("key usage %v, want digitalSignature only", leaf.KeyUsage)
	case !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}):
		t.Errorf("extended key usage %v", leaf.ExtKeyUsage)
	case !leaf.NotBefore.Before(before):
		t.Errorf("NotBefore %s not backdated", leaf.NotBefore)
	case leaf.NotAfter.Before(before.Add(10*time.Minute).Truncate(time.Second)) || leaf.NotAfter.After(time.Now().Add(10*time.Minute)):
		t.Errorf("NotAfter %s, want now+10m", leaf.NotAfter)
	}
	if _, ok := svid.PrivateKey.(*ecdsa.PrivateKey); !ok {
		t.Errorf("private key %T, want ECDSA", svid.PrivateKey)
	}
	// It is a valid SVID by go-spiffe's rules, and verifies against the bundle.
	cert, key, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509svid.Parse(cert, key); err != nil {
		t.Errorf("go-spiffe rejects the SVID: %v", err)
	}
	if id, _, err := x509svid.Verify(svid.Certificates, ca.Bundle()); err != nil || id != idClient {
		t.Errorf("Verify = %v, %v", id, err)
	}
	other, _ := ca.Issue(idClient, time.Minute)
	if other.Certificates[0].SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("two SVIDs with one serial number")
	}
}

func TestIssueRefuses(t *testing.T) {
	ca := newTestCA(t, tdExample)
	for name, tt := range map[string]struct {
		id  spiffeid.ID
		ttl time.Duration
	}{
		"other trust domain": {spiffeid.RequireFromString("spiffe://other.org/a"), time.Hour},
		"no path":            {tdExample.ID(), time.Hour},
		"zero TTL":           {idClient, 0},
		"negative TTL":       {idClient, -time.Second},
	} {
		if _, err := ca.Issue(tt.id, tt.ttl); err == nil {
			t.Errorf("%s: Issue succeeded", name)
		}
	}
}

func TestIssueNeverOutlivesCA(t *testing.T) {
	ca := newTestCA(t, tdExample)
	svid, err := ca.Issue(idClient, 10*CALifetime)
	if err != nil {
		t.Fatal(err)
	}
	if svid.Certificates[0].NotAfter.After(ca.Certificate().NotAfter) {
		t.Error("SVID outlives its CA")
	}
}

func TestLoadCA(t *testing.T) {
	ca := newTestCA(t, tdExample)
	certPEM, keyPEM, err := ca.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.TrustDomain() != tdExample || !loaded.Certificate().Equal(ca.Certificate()) {
		t.Fatal("loaded CA differs")
	}
	// SVIDs of the loaded CA verify against the original's bundle.
	if _, _, err := x509svid.Verify(issue(t, loaded, idClient).Certificates, ca.Bundle()); err != nil {
		t.Fatal(err)
	}

	otherCert, otherKey, _ := newTestCA(t, tdExample).MarshalPEM()
	leafCert, leafKey, _ := issue(t, ca, idClient).Marshal()
	for name, tt := range map[string]struct{ cert, key []byte }{
		"key of another CA": {certPEM, otherKey},
		"cert of another":   {otherCert, keyPEM},
		"leaf":              {leafCert, leafKey},
		"garbage cert":      {[]byte("not PEM"), keyPEM},
		"garbage key":       {certPEM, []byte("not PEM")},
		"empty":             {nil, nil},
	} {
		if _, err := LoadCA(tt.cert, tt.key); err == nil {
			t.Errorf("%s: LoadCA succeeded", name)
		}
	}
}

func TestCAFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca := newTestCA(t, tdExample)
	if err := ca.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]fs.FileMode{CAKeyFileName: 0o600, CACertFileName: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), want)
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, want 0700", fi.Mode().Perm())
	}
	if err := newTestCA(t, tdExample).WriteFiles(dir); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second WriteFiles = %v, want ErrExist", err)
	}
	loaded, err := LoadCADir(dir)
	if err != nil || !loaded.Certificate().Equal(ca.Certificate()) {
		t.Fatalf("LoadCADir = %v; same CA: %v", err, err == nil && loaded.Certificate().Equal(ca.Certificate()))
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("dir holds %d files, want 2 (temporary files left?)", len(entries))
	}
}

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "meshproxy", "ca")
	first, created, err := LoadOrCreateCA(dir, tdExample)
	if err != nil || !created {
		t.Fatalf("first call: created %v, %v", created, err)
	}
	second, created, err := LoadOrCreateCA(dir, tdExample)
	if err != nil || created {
		t.Fatalf("second call: created %v, %v", created, err)
	}
	if !second.Certificate().Equal(first.Certificate()) {
		t.Error("second call returned another CA")
	}
	if _, _, err := LoadOrCreateCA(dir, tdOther); err == nil {
		t.Error("CA of another trust domain accepted")
	}
	if err := os.WriteFile(filepath.Join(dir, CACertFileName), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateCA(dir, tdExample); err == nil {
		t.Error("corrupt CA silently replaced or accepted")
	}
}

func TestLoadOrCreateCAConcurrently(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	const n = 4
	cas := make(chan *CA, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			ca, _, err := LoadOrCreateCA(dir, tdExample)
			cas <- ca
			errs <- err
		}()
	}
	var certs []*x509.Certificate
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		certs = append(certs, (<-cas).Certificate())
	}
	for _, c := range certs[1:] {
		if !c.Equal(certs[0]) {
			t.Fatal("concurrent callers got different CAs")
		}
	}
}

func TestDefaultCADir(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", "/cfg")
	dir, err := DefaultCADir()
	if err != nil || dir != "/cfg/meshproxy/ca" {
		t.Fatalf("DefaultCADir = %q, %v", dir, err)
	}
}

func TestWriteSVIDFiles(t *testing.T) {
	ca := newTestCA(t, tdExample)
	svid := issue(t, ca, idClient)
	dir := filepath.Join(t.TempDir(), "out")
	if err := WriteSVIDFiles(dir, svid, ca.Bundle()); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, SVIDKeyFileName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	got, err := x509svid.Load(filepath.Join(dir, SVIDFileName), filepath.Join(dir, SVIDKeyFileName))
	if err != nil || !got.Certificates[0].Equal(svid.Certificates[0]) {
		t.Fatalf("reading back: %v", err)
	}
	bundlePEM, _ := os.ReadFile(filepath.Join(dir, BundleFileName))
	wantPEM, _, _ := ca.MarshalPEM()
	if !bytes.Equal(bundlePEM, wantPEM) {
		t.Error("bundle file is not the CA certificate")
	}
}

// expiringCA returns a test CA whose certificate says it expires in left.
func expiringCA(t *testing.T, left time.Duration) *CA {
	t.Helper()
	ca := newTestCA(t, tdExample)
	cert := *ca.cert
	cert.NotAfter = time.Now().Add(left)
	ca.cert = &cert
	return ca
}

func TestIssueRefusesAfterCAExpiry(t *testing.T) {
	if _, err := expiringCA(t, -time.Hour).Issue(idClient, time.Hour); !errors.Is(err, ErrCAExpired) {
		t.Errorf("expired CA: Issue error %v, want ErrCAExpired", err)
	}
}

// A dev source whose CA is about to expire rotates its ever shorter SVIDs
// at most once a second, and not at all once the CA has expired, rather
// than spinning.
func TestDevSourceNearCAExpiryDoesNotSpin(t *testing.T) {
	src, err := NewDevSource(expiringCA(t, 3*time.Second), idServer, time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	issued := 0
	deadline := time.After(4 * time.Second)
	for {
		select {
		case <-src.Changed():
			issued++
			continue
		case <-deadline:
		}
		break
	}
	// Rotations at about 1.5, 2.5 and 3 s at the most; then the CA has
	// expired.
	if issued > 4 {
		t.Errorf("%d SVIDs issued in 4s by a CA expiring in 3s", issued)
	}
}
