package identity

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/zap"
)

// devRetry is how soon a failed rotation is retried, and devMinInterval
// the least time between two rotations.
const (
	devRetry       = 5 * time.Second
	devMinInterval = time.Second
)

// DevSource is a Source that issues its own SVIDs from an embedded CA: for
// development and demos, where there is no SPIRE. It issues the first SVID
// in NewDevSource (so it is ready at once) and a new one at half of each
// SVID's lifetime, like the SPIRE agent does. Its bundle set holds the CA's
// trust domain only.
type DevSource struct {
	*state
	ca   *CA
	id   spiffeid.ID
	ttl  time.Duration
	log  *zap.Logger
	m    *Metrics
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

var _ Source = (*DevSource)(nil)

// NewDevSource returns a source issuing SVIDs for id from ca, each valid for
// ttl (DefaultSVIDTTL if 0). id must be in ca's trust domain. The private
// keys stay in memory. log and m may be nil.
func NewDevSource(ca *CA, id spiffeid.ID, ttl time.Duration, log *zap.Logger, m *Metrics) (*DevSource, error) {
	if ca == nil {
		return nil, errors.New("dev source: nil CA")
	}
	if ttl == 0 {
		ttl = DefaultSVIDTTL
	}
	if ttl < MinSVIDTTL {
		return nil, fmt.Errorf("dev source: SVID TTL %s is shorter than %s", ttl, MinSVIDTTL)
	}
	if log == nil {
		log = zap.NewNop()
	}
	s := &DevSource{
		state: newState(),
		ca:    ca,
		id:    id,
		ttl:   ttl,
		log:   log.With(zap.String("identity_source", SourceDev)),
		m:     m,
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	svid, err := s.rotate()
	if err != nil {
		return nil, fmt.Errorf("dev source: %w", err)
	}
	go s.run(rotateAt(svid))
	return s, nil
}

// rotate issues and installs a new SVID.
func (s *DevSource) rotate() (*x509svid.SVID, error) {
	svid, err := s.ca.Issue(s.id, s.ttl)
	if err != nil {
		return nil, err
	}
	if _, err := s.set(svid, x509bundle.NewSet(s.ca.Bundle())); err != nil {
		return nil, err
	}
	s.m.svidInstalled(svid)
	leaf := svid.Certificates[0]
	s.log.Info("issued X509-SVID",
		zap.Stringer("spiffe_id", svid.ID),
		zap.String("serial", leaf.SerialNumber.Text(16)),
		zap.Time("not_after", leaf.NotAfter))
	return svid, nil
}

// run rotates the SVID at half life until Close.
func (s *DevSource) run(next time.Time) {
	defer close(s.done)
	t := time.NewTimer(time.Until(next))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		svid, err := s.rotate()
		if err != nil {
			s.m.sourceError(SourceDev, "issue")
			s.log.Error("rotating X509-SVID", zap.Error(err))
			t.Reset(devRetry)
			continue
		}
		// Never sooner than devMinInterval: an SVID cut short by its CA's
		// expiry is due at once, and must not make this loop spin.
		t.Reset(max(time.Until(rotateAt(svid)), devMinInterval))
	}
}

// rotateAt is when an SVID is due for replacement: half way between its
// issue (NotBefore without the clock-skew backdating) and its expiry.
func rotateAt(svid *x509svid.SVID) time.Time {
	leaf := svid.Certificates[0]
	issued := leaf.NotBefore.Add(clockSkew)
	return issued.Add(leaf.NotAfter.Sub(issued) / 2)
}

// Close stops rotation. The last SVID stays readable.
func (s *DevSource) Close() error {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	return nil
}
