package identity

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Source names, the values of the source label of
// identity_source_errors_total.
const (
	SourceWorkloadAPI = "workload_api"
	SourceFiles       = "files"
	SourceDev         = "dev"
)

// Metrics are the identity metrics. The first two keep Linkerd's names so
// existing dashboards and alerts on certificate expiry work unchanged. A nil
// *Metrics records nothing.
type Metrics struct {
	expiry  prometheus.Gauge
	refresh prometheus.Counter
	svidID  *prometheus.GaugeVec
	errors  *prometheus.CounterVec

	mu     sync.Mutex
	lastID string // the spiffe_id label currently set to 1
}

// NewMetrics registers the identity metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "identity_cert_expiration_timestamp_seconds",
			Help: "Time at which the proxy's current X509-SVID expires, in seconds since the Unix epoch.",
		}),
		refresh: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "identity_cert_refresh_count",
			Help: "Number of times the proxy's X509-SVID was installed or replaced.",
		}),
		svidID: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "identity_svid_spiffe_id",
			Help: "The SPIFFE ID of the proxy's current X509-SVID, as a label; the value is always 1.",
		}, []string{"spiffe_id"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "identity_source_errors_total",
			Help: "Errors fetching or loading the proxy's identity, by source and reason.",
		}, []string{"source", "reason"}),
	}
	for _, c := range []prometheus.Collector{m.expiry, m.refresh, m.svidID, m.errors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// svidInstalled records that svid became the current SVID.
func (m *Metrics) svidInstalled(svid *x509svid.SVID) {
	if m == nil {
		return
	}
	m.expiry.Set(float64(svid.Certificates[0].NotAfter.Unix()))
	m.refresh.Inc()
	id := svid.ID.String()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lastID != id {
		if m.lastID != "" {
			m.svidID.DeleteLabelValues(m.lastID)
		}
		m.svidID.WithLabelValues(id).Set(1)
		m.lastID = id
	}
}

// sourceError counts one error of a source; reason must be bounded.
func (m *Metrics) sourceError(source, reason string) {
	if m != nil {
		m.errors.WithLabelValues(source, reason).Inc()
	}
}
