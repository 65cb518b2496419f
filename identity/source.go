package identity

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Source is what the proxies take their identity from: the current
// X509-SVID, the trust bundles of every trust domain the source knows (its
// own and federated ones), and notice of changes to either. All methods are
// safe for concurrent use and none of them blocks on I/O; WaitReady blocks
// only on its context.
type Source interface {
	// GetX509SVID returns the current SVID, or an error wrapping ErrNotReady
	// before the first one. The SVID is shared: callers must not modify it.
	x509svid.Source

	// GetX509BundleForTrustDomain returns the current bundle of a trust
	// domain, or an error wrapping ErrUntrusted when there is none.
	x509bundle.Source

	// Changed returns a channel that is closed at the next change of the
	// SVID or the bundles. Any number of listeners may wait on it; to see
	// the change after that one, call Changed again. After Close no further
	// change is announced, so listeners should also watch their own context.
	Changed() <-chan struct{}

	// Ready reports whether the source holds an SVID that is valid now.
	Ready() bool

	// WaitReady blocks until Ready would return true or ctx ends; in the
	// latter case it returns an error wrapping ErrNotReady and ctx.Err().
	WaitReady(ctx context.Context) error

	// Close stops the source's background work. The last SVID and bundles
	// stay readable. Close is idempotent.
	Close() error
}

// snapshot is one consistent state of a source, replaced whole on change.
type snapshot struct {
	svid    *x509svid.SVID
	cert    *tls.Certificate // svid as crypto/tls wants it, built once
	bundles *x509bundle.Set
	gen     uint64 // counts the snapshots, 1 for the first
}

// state is the part every Source shares: the current snapshot, read
// without locks, and the change broadcast.
type state struct {
	cur atomic.Pointer[snapshot]

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on each change
}

func newState() *state {
	return &state{changed: make(chan struct{})}
}

// GetX509SVID implements x509svid.Source.
func (s *state) GetX509SVID() (*x509svid.SVID, error) {
	snap := s.cur.Load()
	if snap == nil {
		return nil, ErrNotReady
	}
	return snap.svid, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (s *state) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	snap := s.cur.Load()
	if snap != nil {
		if b, ok := snap.bundles.Get(td); ok {
			return b, nil
		}
	}
	return nil, fmt.Errorf("%w: no X.509 bundle for trust domain %q", ErrUntrusted, td)
}

// certificate returns the current SVID in crypto/tls form.
func (s *state) certificate() (*tls.Certificate, error) {
	snap := s.cur.Load()
	if snap == nil {
		return nil, ErrNotReady
	}
	return snap.cert, nil
}

// generation returns the number of changes so far: 0 before the first
// SVID, then one more at each change of the SVID or the bundles.
func (s *state) generation() uint64 {
	if snap := s.cur.Load(); snap != nil {
		return snap.gen
	}
	return 0
}

// Changed implements Source.
func (s *state) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Ready implements Source.
func (s *state) Ready() bool {
	snap := s.cur.Load()
	return snap != nil && validAt(snap.svid, time.Now())
}

// WaitReady implements Source.
func (s *state) WaitReady(ctx context.Context) error {
	for {
		changed := s.Changed() // before the check, so no change is missed
		var wake <-chan time.Time
		if snap := s.cur.Load(); snap != nil {
			now := time.Now()
			if validAt(snap.svid, now) {
				return nil
			}
			// An SVID from a clock slightly ahead of ours becomes valid
			// without any change; an expired one needs a new SVID.
			if nb := snap.svid.Certificates[0].NotBefore; now.Before(nb) {
				t := time.NewTimer(nb.Sub(now))
				defer t.Stop()
				wake = t.C
			}
		}
		select {
		case <-changed:
		case <-wake:
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrNotReady, ctx.Err())
		}
	}
}

// set installs a new SVID and bundle set and reports whether anything
// changed; on change, listeners of Changed are woken.
func (s *state) set(svid *x509svid.SVID, bundles *x509bundle.Set) (bool, error) {
	cert, err := tlsCertificate(svid)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.cur.Load()
	if old != nil && sameSVID(old.svid, svid) && sameBundles(old.bundles, bundles) {
		return false, nil
	}
	var gen uint64 = 1
	if old != nil {
		gen = old.gen + 1
	}
	s.cur.Store(&snapshot{svid: svid, cert: cert, bundles: bundles, gen: gen})
	close(s.changed)
	s.changed = make(chan struct{})
	return true, nil
}

// validAt reports whether svid's leaf is within its validity window at t.
func validAt(svid *x509svid.SVID, t time.Time) bool {
	leaf := svid.Certificates[0]
	return !t.Before(leaf.NotBefore) && !t.After(leaf.NotAfter)
}

func sameSVID(a, b *x509svid.SVID) bool {
	if len(a.Certificates) != len(b.Certificates) {
		return false
	}
	for i := range a.Certificates {
		if !a.Certificates[i].Equal(b.Certificates[i]) {
			return false
		}
	}
	return true
}

func sameBundles(a, b *x509bundle.Set) bool {
	ab, bb := a.Bundles(), b.Bundles() // both sorted by trust domain
	if len(ab) != len(bb) {
		return false
	}
	for i := range ab {
		if !ab[i].Equal(bb[i]) {
			return false
		}
	}
	return true
}

// tlsCertificate converts an SVID to the form crypto/tls presents.
func tlsCertificate(svid *x509svid.SVID) (*tls.Certificate, error) {
	if svid == nil || len(svid.Certificates) == 0 || svid.PrivateKey == nil {
		return nil, fmt.Errorf("incomplete X509-SVID")
	}
	cert := &tls.Certificate{
		PrivateKey: svid.PrivateKey,
		Leaf:       svid.Certificates[0],
	}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, nil
}
