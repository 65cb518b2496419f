package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func fileOptions(dir string) FileOptions {
	return FileOptions{
		CertFile:   filepath.Join(dir, SVIDFileName),
		KeyFile:    filepath.Join(dir, SVIDKeyFileName),
		BundleFile: filepath.Join(dir, BundleFileName),
	}
}

// startFiles starts a FileSource whose reload results arrive on the
// returned channel.
func startFiles(t *testing.T, opts FileOptions, m *Metrics) (*FileSource, <-chan error) {
	t.Helper()
	reloads := make(chan error, 100)
	src, err := newFileSource(opts, nil, m, func(err error) {
		select {
		case reloads <- err:
		default: // the test stopped listening
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	<-reloads // the initial load
	return src, reloads
}

// waitChange waits for the source's next change.
func waitChange(t *testing.T, changed <-chan struct{}) {
	t.Helper()
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("the source did not pick up the new files")
	}
}

// waitReloadError waits for a reload that fails.
func waitReloadError(t *testing.T, reloads <-chan error) error {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-reloads:
			if err != nil {
				return err
			}
		case <-deadline:
			t.Fatal("no failed reload")
			return nil
		}
	}
}

func serial(t *testing.T, src Source) string {
	t.Helper()
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	return svid.Certificates[0].SerialNumber.String()
}

func TestFileSourceReloadsRewrittenFiles(t *testing.T) {
	ca := newTestCA(t, tdExample)
	dir := t.TempDir()
	if err := WriteSVIDFiles(dir, issue(t, ca, idClient), ca.Bundle()); err != nil {
		t.Fatal(err)
	}
	src, _ := startFiles(t, fileOptions(dir), nil)
	if !src.Ready() {
		t.Fatal("not ready with valid files")
	}
	before := serial(t, src)

	changed := src.Changed()
	next := issue(t, ca, idClient)
	if err := WriteSVIDFiles(dir, next, ca.Bundle()); err != nil {
		t.Fatal(err)
	}
	waitChange(t, changed)
	if got := serial(t, src); got == before || got != next.Certificates[0].SerialNumber.String() {
		t.Fatalf("serial %s after rewrite; before %s, written %s", got, before, next.Certificates[0].SerialNumber)
	}
}

// TestFileSourceKeepsSVIDOnBadReload writes broken files over good ones:
// each time the source keeps the SVID it had and counts the error.
func TestFileSourceKeepsSVIDOnBadReload(t *testing.T) {
	ca := newTestCA(t, tdExample)
	impostor := newTestCA(t, tdExample)
	expired := handMade(t, ca, idClient, func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
	})
	pemOf := func(svid *x509svid.SVID) (cert, key []byte) {
		cert, key, err := svid.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return cert, key
	}
	tests := []struct {
		name   string
		write  func(dir string) // breaks the files
		reason string
	}{
		{"garbage certificate", func(dir string) {
			writeFile(t, filepath.Join(dir, SVIDFileName), []byte("-----BEGIN CERTIFICATE-----\ngarbage\n"))
		}, "parse"},
		{"empty certificate", func(dir string) {
			writeFile(t, filepath.Join(dir, SVIDFileName), nil)
		}, "parse"},
		{"certificate without its key", func(dir string) {
			cert, _ := pemOf(issue(t, ca, idClient))
			writeFile(t, filepath.Join(dir, SVIDFileName), cert)
		}, "parse"},
		{"certificate of a foreign CA", func(dir string) {
			cert, key := pemOf(issue(t, impostor, idClient))
			writeFile(t, filepath.Join(dir, SVIDKeyFileName), key)
			writeFile(t, filepath.Join(dir, SVIDFileName), cert)
		}, "untrusted"},
		{"expired certificate", func(dir string) {
			cert, key := pemOf(expired)
			writeFile(t, filepath.Join(dir, SVIDKeyFileName), key)
			writeFile(t, filepath.Join(dir, SVIDFileName), cert)
		}, "expired"},
		{"garbage bundle", func(dir string) {
			writeFile(t, filepath.Join(dir, BundleFileName), []byte("garbage"))
		}, "parse"},
		{"bundle removed", func(dir string) {
			if err := os.Remove(filepath.Join(dir, BundleFileName)); err != nil {
				t.Fatal(err)
			}
		}, "read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			good := issue(t, ca, idClient)
			if err := WriteSVIDFiles(dir, good, ca.Bundle()); err != nil {
				t.Fatal(err)
			}
			m, err := NewMetrics(prometheus.NewPedanticRegistry())
			if err != nil {
				t.Fatal(err)
			}
			src, reloads := startFiles(t, fileOptions(dir), m)
			want := serial(t, src)

			tt.write(dir)
			waitReloadError(t, reloads)
			if got := serial(t, src); got != want {
				t.Fatalf("serial %s after a bad reload, want the old %s", got, want)
			}
			if !src.Ready() {
				t.Error("not ready after a bad reload")
			}
			if n := testutil.ToFloat64(m.errors.WithLabelValues(SourceFiles, tt.reason)); n < 1 {
				t.Errorf("identity_source_errors_total{reason=%q} = %v", tt.reason, n)
			}

			// Good files again: the source recovers.
			changed := src.Changed()
			if err := WriteSVIDFiles(dir, issue(t, ca, idClient), ca.Bundle()); err != nil {
				t.Fatal(err)
			}
			waitChange(t, changed)
		})
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := writeFileAtomic(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestFileSourceWaitsForFiles starts with a directory that does not exist
// (so it cannot be watched) and relies on polling to find the files.
func TestFileSourceWaitsForFiles(t *testing.T) {
	ca := newTestCA(t, tdExample)
	dir := filepath.Join(t.TempDir(), "later")
	opts := fileOptions(dir)
	opts.PollInterval = 50 * time.Millisecond
	src, _ := startFiles(t, opts, nil)
	if src.Ready() {
		t.Fatal("ready without files")
	}
	if _, err := src.GetX509SVID(); !errors.Is(err, ErrNotReady) {
		t.Fatalf("GetX509SVID = %v, want ErrNotReady", err)
	}
	short, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := src.WaitReady(short); !errors.Is(err, ErrNotReady) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReady = %v, want ErrNotReady and DeadlineExceeded", err)
	}

	if err := WriteSVIDFiles(dir, issue(t, ca, idClient), ca.Bundle()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := src.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestFileSourceFollowsSymlinkSwap mimics a Kubernetes secret or CSI
// volume: the files are symlinks through ..data, and an update points
// ..data at a new directory with one rename.
func TestFileSourceFollowsSymlinkSwap(t *testing.T) {
	ca := newTestCA(t, tdExample)
	dir := t.TempDir()
	publish := func(version string, svid *x509svid.SVID) {
		if err := WriteSVIDFiles(filepath.Join(dir, version), svid, ca.Bundle()); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(version, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	publish("..v1", issue(t, ca, idClient))
	for _, f := range []string{SVIDFileName, SVIDKeyFileName, BundleFileName} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	src, _ := startFiles(t, fileOptions(dir), nil)
	if !src.Ready() {
		t.Fatal("not ready")
	}
	changed := src.Changed()
	next := issue(t, ca, idClient)
	publish("..v2", next)
	waitChange(t, changed)
	if got := serial(t, src); got != next.Certificates[0].SerialNumber.String() {
		t.Fatalf("serial %s, want %s", got, next.Certificates[0].SerialNumber)
	}
}

func TestFileSourceFederatedBundles(t *testing.T) {
	ca := newTestCA(t, tdExample)
	other := newTestCA(t, tdOther)
	dir := t.TempDir()
	if err := WriteSVIDFiles(dir, issue(t, ca, idClient), ca.Bundle()); err != nil {
		t.Fatal(err)
	}
	otherPEM, _, _ := other.MarshalPEM()
	writeFile(t, filepath.Join(dir, "other.pem"), otherPEM)
	opts := fileOptions(dir)
	opts.FederatedBundleFiles = map[string]string{"other.org": filepath.Join(dir, "other.pem")}
	src, _ := startFiles(t, opts, nil)
	for td, want := range map[spiffeid.TrustDomain]*CA{tdExample: ca, tdOther: other} {
		b, err := src.GetX509BundleForTrustDomain(td)
		if err != nil || !b.Equal(want.Bundle()) {
			t.Errorf("bundle of %s: %v", td, err)
		}
	}
	if _, err := src.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("third.org")); !errors.Is(err, ErrUntrusted) {
		t.Errorf("bundle of an unknown trust domain: %v", err)
	}
}

func TestNewFileSourceInvalidOptions(t *testing.T) {
	for name, opts := range map[string]FileOptions{
		"empty":     {},
		"no key":    {CertFile: "c", BundleFile: "b"},
		"no bundle": {CertFile: "c", KeyFile: "k"},
		"bad federated trust domain": {CertFile: "c", KeyFile: "k", BundleFile: "b",
			FederatedBundleFiles: map[string]string{"Not A Domain": "x"}},
	} {
		if _, err := NewFileSource(opts, nil, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
