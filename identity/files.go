package identity

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/zap"
)

// Defaults of FileOptions.
const (
	// DefaultPollInterval is how often files are re-read even without a
	// change event, in case one was missed (e.g. a watched directory was
	// itself replaced).
	DefaultPollInterval = time.Minute
	// fileSettle is how long after the last change event the files are read,
	// so that a writer replacing three files is seen once, complete.
	fileSettle = 100 * time.Millisecond
)

// FileOptions names the PEM files a FileSource reads.
type FileOptions struct {
	// CertFile holds the SVID: the leaf certificate first, then any
	// intermediates. Required.
	CertFile string
	// KeyFile holds the SVID's private key (PKCS#8, SEC 1 or PKCS#1).
	// Required; it may be CertFile itself.
	KeyFile string
	// BundleFile holds the CA certificates of the SVID's own trust domain.
	// Required.
	BundleFile string
	// FederatedBundleFiles holds the bundles of other trust domains, by
	// trust domain name, for peers from those trust domains.
	FederatedBundleFiles map[string]string
	// PollInterval is the fallback re-read period; DefaultPollInterval if
	// 0, no polling if negative.
	PollInterval time.Duration
}

// FileSource is a Source reading PEM files, as written by spiffe-helper or
// cert-manager's csi-driver-spiffe, and reloading them when they change.
// It watches the files' directories rather than the files, because those
// tools replace files by rename or by swapping a symlink. A reload that
// fails (unreadable, unparsable, key not matching, chain not verifying
// against the bundle, expired) keeps the previous SVID, and is logged and
// counted in identity_source_errors_total{source="files"}.
type FileSource struct {
	*state
	opts      FileOptions
	log       *zap.Logger
	m         *Metrics
	watcher   *fsnotify.Watcher // nil if watching failed; polling remains
	unwatched map[string]bool   // directories to watch once they exist
	stop      chan struct{}
	done      chan struct{}
	once      sync.Once

	lastErr  string      // last reload error logged, to log repeats at debug
	reloaded func(error) // test hook: called after each reload
}

var _ Source = (*FileSource)(nil)

// NewFileSource starts a source reading opts' files. It does not fail when
// the files are missing or invalid: like the Workload API source before the
// agent answers, it is then not Ready until they become valid. It fails
// only for invalid options. log and m may be nil.
func NewFileSource(opts FileOptions, log *zap.Logger, m *Metrics) (*FileSource, error) {
	return newFileSource(opts, log, m, nil)
}

func newFileSource(opts FileOptions, log *zap.Logger, m *Metrics, reloaded func(error)) (*FileSource, error) {
	if opts.CertFile == "" || opts.KeyFile == "" || opts.BundleFile == "" {
		return nil, errors.New("file source: certificate, key and bundle files are all required")
	}
	for name := range opts.FederatedBundleFiles {
		if _, err := spiffeid.TrustDomainFromString(name); err != nil {
			return nil, fmt.Errorf("file source: federated bundle trust domain %q: %w", name, err)
		}
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if log == nil {
		log = zap.NewNop()
	}
	s := &FileSource{
		state:    newState(),
		opts:     opts,
		log:      log.With(zap.String("identity_source", SourceFiles)),
		m:        m,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		reloaded: reloaded,
	}
	s.watch()
	s.reload()
	go s.run()
	return s, nil
}

// watch starts watching the directories of the files. A directory that
// cannot be watched yet (it may not exist yet) is retried at each poll;
// meanwhile polling picks up its files.
func (s *FileSource) watch() {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Warn("cannot watch identity files; polling only", zap.Error(err))
		return
	}
	s.watcher = w
	s.unwatched = map[string]bool{}
	for _, f := range s.files() {
		s.unwatched[filepath.Dir(f)] = true
	}
	s.addWatches()
}

// addWatches tries to watch the directories not watched yet.
func (s *FileSource) addWatches() {
	for dir := range s.unwatched {
		if err := s.watcher.Add(dir); err != nil {
			s.log.Debug("cannot watch identity file directory yet; polling it", zap.String("dir", dir), zap.Error(err))
			continue
		}
		delete(s.unwatched, dir)
	}
}

func (s *FileSource) files() []string {
	files := []string{s.opts.CertFile, s.opts.KeyFile, s.opts.BundleFile}
	for _, f := range s.opts.FederatedBundleFiles {
		files = append(files, f)
	}
	return files
}

// run reloads after change events (once they settle) and on the poll
// timer, until Close.
func (s *FileSource) run() {
	defer close(s.done)
	var events <-chan fsnotify.Event
	var errs <-chan error
	if s.watcher != nil {
		events, errs = s.watcher.Events, s.watcher.Errors
	}
	var poll <-chan time.Time
	if s.opts.PollInterval > 0 {
		t := time.NewTicker(s.opts.PollInterval)
		defer t.Stop()
		poll = t.C
	}
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	for {
		select {
		case <-s.stop:
			return
		case _, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			settle.Reset(fileSettle)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			s.log.Warn("watching identity files", zap.Error(err))
		case <-settle.C:
			s.reload()
		case <-poll:
			if len(s.unwatched) > 0 {
				s.addWatches()
			}
			s.reload()
		}
	}
}

// reload reads the files and installs them if they are valid.
func (s *FileSource) reload() {
	err := s.reloadOnce()
	if s.reloaded != nil {
		s.reloaded(err)
	}
}

func (s *FileSource) reloadOnce() error {
	svid, bundles, reason, err := s.load()
	if err == nil {
		var changed bool
		changed, err = s.set(svid, bundles)
		if err == nil {
			s.lastErr = ""
			if changed {
				s.m.svidInstalled(svid)
				leaf := svid.Certificates[0]
				s.log.Info("loaded X509-SVID",
					zap.Stringer("spiffe_id", svid.ID),
					zap.String("serial", leaf.SerialNumber.Text(16)),
					zap.Time("not_after", leaf.NotAfter))
			}
			return nil
		}
		reason = "invalid"
	}
	s.m.sourceError(SourceFiles, reason)
	level := zap.ErrorLevel
	if err.Error() == s.lastErr {
		level = zap.DebugLevel // the same error on every poll is news once
	}
	s.lastErr = err.Error()
	s.log.Log(level, "loading identity files; keeping the previous SVID",
		zap.String("reason", reason), zap.Error(err))
	return err
}

// load reads and checks all files; reason is a bounded label for errors.
func (s *FileSource) load() (*x509svid.SVID, *x509bundle.Set, string, error) {
	certPEM, err := os.ReadFile(s.opts.CertFile)
	if err != nil {
		return nil, nil, "read", err
	}
	keyPEM, err := os.ReadFile(s.opts.KeyFile)
	if err != nil {
		return nil, nil, "read", err
	}
	bundlePEM, err := os.ReadFile(s.opts.BundleFile)
	if err != nil {
		return nil, nil, "read", err
	}
	federated := map[string][]byte{}
	for td, path := range s.opts.FederatedBundleFiles {
		if federated[td], err = os.ReadFile(path); err != nil {
			return nil, nil, "read", err
		}
	}
	return parseSVIDFiles(certPEM, keyPEM, bundlePEM, federated, time.Now())
}

// parseSVIDFiles parses and checks the contents of the identity files: the
// key must match the leaf, the chain must verify against the bundle of the
// SVID's trust domain, and the leaf must not be expired at now (a leaf not
// yet valid is accepted: the source is Ready once it becomes valid).
func parseSVIDFiles(certPEM, keyPEM, bundlePEM []byte, federated map[string][]byte, now time.Time) (*x509svid.SVID, *x509bundle.Set, string, error) {
	certs, err := parsePEMCertificates(certPEM)
	if err != nil {
		return nil, nil, "parse", fmt.Errorf("certificate file: %w", err)
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, nil, "parse", fmt.Errorf("key file: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, "parse", fmt.Errorf("key file: %w", err)
	}
	var chainDER []byte
	for _, c := range certs {
		chainDER = append(chainDER, c.Raw...)
	}
	svid, err := x509svid.ParseRaw(chainDER, keyDER) // checks SVID rules and the key
	if err != nil {
		return nil, nil, "parse", err
	}
	td := svid.ID.TrustDomain()
	bundles := x509bundle.NewSet()
	own, err := parseBundle(td, bundlePEM)
	if err != nil {
		return nil, nil, "parse", fmt.Errorf("bundle file: %w", err)
	}
	bundles.Add(own)
	for name, data := range federated {
		ftd, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			return nil, nil, "parse", err
		}
		if ftd == td {
			continue // the SVID's own bundle file wins
		}
		b, err := parseBundle(ftd, data)
		if err != nil {
			return nil, nil, "parse", fmt.Errorf("bundle file of %s: %w", ftd, err)
		}
		bundles.Add(b)
	}
	leaf := svid.Certificates[0]
	if now.After(leaf.NotAfter) {
		return nil, nil, "expired", fmt.Errorf("%w: X509-SVID expired at %s", ErrExpired, leaf.NotAfter)
	}
	// Check the chain's signatures at a time within the leaf's validity, so
	// a leaf from a clock slightly ahead is still checked.
	at := now
	if at.Before(leaf.NotBefore) {
		at = leaf.NotBefore
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundles, x509svid.WithTime(at)); err != nil {
		return nil, nil, "untrusted", fmt.Errorf("X509-SVID does not verify against the bundle: %w", err)
	}
	return svid, bundles, "", nil
}

// parsePEMCertificates parses every CERTIFICATE block; other blocks are
// skipped, and there must be at least one certificate.
func parsePEMCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

func parseBundle(td spiffeid.TrustDomain, data []byte) (*x509bundle.Bundle, error) {
	certs, err := parsePEMCertificates(data)
	if err != nil {
		return nil, err
	}
	return x509bundle.FromX509Authorities(td, certs), nil
}

// Close stops watching. The last SVID stays readable.
func (s *FileSource) Close() error {
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		if s.watcher != nil {
			_ = s.watcher.Close()
		}
	})
	return nil
}
