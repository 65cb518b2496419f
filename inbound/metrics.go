package inbound

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed722d2a70/meshproxy/identity"
)

// errBadHeader wraps every transport header failure.
var errBadHeader = errors.New("bad transport header")

const reasonWorkloadUnreachable = "workload_unreachable"

// refusalReason maps a refusal to its bounded metric label.
func refusalReason(err error) string {
	switch {
	case errors.Is(err, ErrPlaintext):
		return "plaintext"
	case errors.Is(err, ErrTLSVersion):
		return "tls_version"
	case errors.Is(err, ErrALPN):
		return "alpn"
	case errors.Is(err, ErrNoTransportHeader):
		return "no_transport_header"
	case errors.Is(err, errBadHeader):
		return "bad_header"
	case errors.Is(err, ErrLoop):
		return "loop"
	case errors.Is(err, ErrPortNotAllowed):
		return "port_not_allowed"
	case errors.Is(err, ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, ErrIdentityRequired):
		return "identity_required"
	case errors.Is(err, errNoOriginalDst):
		return "no_original_dst"
	case errors.Is(err, errHandshakeTooLarge):
		return reasonHandshakeTooLarge
	}
	return identity.RefusalReason(err)
}

// Metrics are the inbound proxy's refusal counters. A nil *Metrics counts
// nothing.
type Metrics struct {
	tlsRefused   *prometheus.CounterVec
	headerErrors *prometheus.CounterVec
	pending      prometheus.Gauge
	unmeshed     prometheus.Gauge
	shed         *prometheus.CounterVec
}

// NewMetrics registers the inbound metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		tlsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inbound_tls_refused_total",
			Help: "Inbound connections refused, by reason: plaintext, TLS versions or ALPN protocols not accepted, untrusted or unauthorized peers, bad headers, loops.",
		}, []string{"reason"}),
		headerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "transport_header_errors_total",
			Help: "Transport headers that could not be read, by reason.",
		}, []string{"reason"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "inbound_pending_connections",
			Help: "Inbound connections accepted whose peer has not yet authenticated (mTLS handshake) and sent its transport header or, redirected in transparent mode, whose protocol detection has not yet decided.",
		}),
		unmeshed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "inbound_unmeshed_http_connections",
			Help: "Unmeshed clients' HTTP connections (transparent mode, tls=no_identity) the inbound proxy serves itself.",
		}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inbound_connections_shed_total",
			Help: "Inbound connections reset unserved, by reason: source_limit (the source had its maximum of connections pending their handshake), oldest (the oldest connection pending its handshake, reset to make room for a new one), header_source_limit and header_oldest (the same for verified peers pending their transport header), unmeshed_limit and unmeshed_source_limit (too many unmeshed HTTP connections in total or from the source), fd_limit (out of file descriptors, or within the reserve kept for the admin server).",
		}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{m.tlsRefused, m.headerErrors, m.pending, m.unmeshed, m.shed} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) refused(reason string) {
	if m != nil {
		m.tlsRefused.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) headerError(reason string) {
	if m != nil {
		m.headerErrors.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) pendingDelta(d float64) {
	if m != nil {
		m.pending.Add(d)
	}
}

func (m *Metrics) unmeshedDelta(d float64) {
	if m != nil {
		m.unmeshed.Add(d)
	}
}

func (m *Metrics) connectionShed(reason string) {
	if m != nil {
		m.shed.WithLabelValues(reason).Inc()
	}
}
