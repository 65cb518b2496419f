package identity

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// File names in a CA directory and in an SVID output directory. The SVID
// names are spiffe-helper's defaults, so a FileSource reads either.
const (
	CACertFileName  = "ca.pem"
	CAKeyFileName   = "ca_key.pem"
	SVIDFileName    = "svid.pem"
	SVIDKeyFileName = "svid_key.pem"
	BundleFileName  = "svid_bundle.pem"
)

// DefaultCADir returns where the dev CA lives when no directory is given:
// meshproxy/ca under the user's configuration directory
// ($XDG_CONFIG_HOME, else ~/.config, on Linux).
func DefaultCADir() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("dev CA directory: %w", err)
	}
	return filepath.Join(dir, "meshproxy", "ca"), nil
}

// WriteFiles writes the CA certificate (mode 0644) and private key (mode
// 0600) into dir, creating dir with mode 0700 if needed. It never replaces
// an existing CA: if either file exists it returns an error wrapping
// fs.ErrExist.
func (ca *CA) WriteFiles(dir string) error {
	certPEM, keyPEM, err := ca.MarshalPEM()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("dev CA: %w", err)
	}
	for _, f := range []string{CACertFileName, CAKeyFileName} {
		if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
			return fmt.Errorf("dev CA: %s: %w", filepath.Join(dir, f), fs.ErrExist)
		}
	}
	// The key goes first: whoever links it owns the directory, so two
	// processes creating the same CA at once cannot mix their halves.
	if err := writeFileExclusive(filepath.Join(dir, CAKeyFileName), keyPEM, 0o600); err != nil {
		return fmt.Errorf("dev CA: %w", err)
	}
	if err := writeFileExclusive(filepath.Join(dir, CACertFileName), certPEM, 0o644); err != nil {
		return fmt.Errorf("dev CA: %w", err)
	}
	return nil
}

// LoadCADir reads the CA that WriteFiles wrote into dir.
func LoadCADir(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFileName))
	if err != nil {
		return nil, fmt.Errorf("dev CA: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFileName))
	if err != nil {
		return nil, fmt.Errorf("dev CA: %w", err)
	}
	return LoadCA(certPEM, keyPEM)
}

// LoadOrCreateCA loads the CA in dir, or creates one for td and writes it
// there when dir holds none. It reports whether it created the CA. A CA
// found for another trust domain is an error. Several processes may call
// it on the same directory at once; they end up sharing one CA.
func LoadOrCreateCA(dir string, td spiffeid.TrustDomain) (*CA, bool, error) {
	ca, err := LoadCADir(dir)
	switch {
	case err == nil:
		if ca.TrustDomain() != td {
			return nil, false, fmt.Errorf("dev CA in %s is for trust domain %q, not %q", dir, ca.TrustDomain(), td)
		}
		return ca, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, err
	}
	ca, err = NewCA(td)
	if err != nil {
		return nil, false, err
	}
	err = ca.WriteFiles(dir)
	if err == nil {
		return ca, true, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return nil, false, err
	}
	// Another process is creating the CA: wait for its certificate.
	for range 50 {
		if ca, err = LoadCADir(dir); err == nil {
			if ca.TrustDomain() != td {
				return nil, false, fmt.Errorf("dev CA in %s is for trust domain %q, not %q", dir, ca.TrustDomain(), td)
			}
			return ca, false, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, false, fmt.Errorf("dev CA in %s is incomplete: %w", dir, err)
}

// WriteSVIDFiles writes svid and bundle into dir under spiffe-helper's file
// names: SVIDFileName (the chain), SVIDKeyFileName (PKCS#8, mode 0600) and
// BundleFileName. Each file is replaced atomically, key and bundle before
// the certificate, so a FileSource watching dir never pairs a new
// certificate with an old key for long; it also refuses such a pair.
func WriteSVIDFiles(dir string, svid *x509svid.SVID, bundle *x509bundle.Bundle) error {
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		return err
	}
	bundlePEM, err := bundle.Marshal()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{BundleFileName, bundlePEM, 0o644},
		{SVIDKeyFileName, keyPEM, 0o600},
		{SVIDFileName, certPEM, 0o644},
	} {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// writeTemp writes data to a new temporary file beside path with the given
// mode and returns its name.
func writeTemp(path string, data []byte, mode os.FileMode) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return "", err
	}
	name := f.Name()
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(name)
		return "", err
	}
	return name, nil
}

// writeFileAtomic replaces path with data: readers see the old or the new
// content, never a mix.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := writeTemp(path, data, mode)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// writeFileExclusive creates path with data, failing with an error wrapping
// fs.ErrExist if it exists; the content appears whole.
func writeFileExclusive(path string, data []byte, mode os.FileMode) error {
	tmp, err := writeTemp(path, data, mode)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	return os.Link(tmp, path)
}
