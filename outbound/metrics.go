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
	errors *prometheus.CounterVec
}

// NewMetrics registers the outbound metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{errors: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outbound_connect_errors_total",
		Help: "Outbound connections that could not be carried to their destination, by reason.",
	}, []string{"reason"})}
	if err := reg.Register(m.errors); err != nil {
		return nil, err
	}
	return m, nil
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
	case errors.Is(err, ErrLoop):
		return "loop"
	case errors.Is(err, ErrNoOriginalDst):
		return "no_original_dst"
	case errors.Is(err, ErrNotMeshproxy):
		return "not_meshproxy"
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
