package outbound

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed722d2a70/meshproxy/identity"
)

// Metrics counts the connections the outbound proxy could not carry. A nil
// *Metrics counts nothing.
type Metrics struct {
	errors  *prometheus.CounterVec
	choices *prometheus.CounterVec
	pending prometheus.Gauge
	shed    *prometheus.CounterVec
}

// NewMetrics registers the outbound metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbound_connect_errors_total",
			Help: "Outbound connections that could not be carried to their destination, by reason.",
		}, []string{"reason"}),
		choices: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbound_endpoint_choices_total",
			Help: "Endpoints of controller-resolved destinations chosen by the balancer, by outcome: connected, or failed (the next attempt tries another endpoint).",
		}, []string{"outcome"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbound_pending_connections",
			Help: "Outbound connections handshaking with their destination (connect, mTLS, transport header) or queued to, under the per-destination cap.",
		}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbound_connections_shed_total",
			Help: "Outbound connections given up unserved, by reason: handshake_queue_timeout (the dial timeout ran out queued for a handshake slot), handshake_queue_full (the destination's queue for handshake slots was full), fd_limit (out of file descriptors).",
		}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{m.errors, m.choices, m.pending, m.shed} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) endpointChoice(connected bool) {
	if m == nil {
		return
	}
	if connected {
		m.choices.WithLabelValues("connected").Inc()
	} else {
		m.choices.WithLabelValues("failed").Inc()
	}
}

func (m *Metrics) connectError(err error) {
	if m != nil {
		m.errors.WithLabelValues(connectErrorReason(err)).Inc()
	}
}

// connectErrorReason maps a routing or dialing failure to a bounded label:
// the identity package's refusal reasons for our verdicts on the peer, and
// a few of our own.
func connectErrorReason(err error) string {
	var alert tls.AlertError
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, ErrUnmeshedRefused):
		return "unmeshed_refused"
	case errors.Is(err, ErrNoEndpoints):
		return "no_endpoints"
	case errors.Is(err, ErrLoop):
		return "loop"
	case errors.Is(err, ErrNoOriginalDst):
		return "no_original_dst"
	case errors.Is(err, ErrNotMeshproxy):
		return "not_meshproxy"
	case errors.Is(err, ErrHandshakeQueueFull):
		return "handshake_queue_full"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused"
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		// No route to the network, or no answer to ARP/NDP on it: the
		// address is wrong or its host is down, not a refusal.
		return "unreachable"
	case errors.As(err, &alert):
		// The peer's verdict on us, e.g. our ID is not authorized there.
		return "refused_by_peer"
	case errors.As(err, &dnsErr):
		return "dns"
	}
	return identity.RefusalReason(err)
}

func (m *Metrics) pendingDelta(d float64) {
	if m != nil {
		m.pending.Add(d)
	}
}

func (m *Metrics) connectionShed(reason string) {
	if m != nil {
		m.shed.WithLabelValues(reason).Inc()
	}
}
