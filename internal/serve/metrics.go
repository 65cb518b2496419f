package serve

import (
	"errors"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts the accept loops' failures. A nil *Metrics counts nothing.
type Metrics struct {
	errors *prometheus.CounterVec
}

// NewMetrics registers the accept metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{errors: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "accept_errors_total",
		Help: "Failed accepts on the proxy's listeners, by direction and reason: emfile (the process's open-file limit), enfile (the system's), other.",
	}, []string{"direction", "reason"})}
	if err := reg.Register(m.errors); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Metrics) acceptError(direction string, err error) {
	if m != nil {
		m.errors.WithLabelValues(direction, acceptErrorReason(err)).Inc()
	}
}

func acceptErrorReason(err error) string {
	switch {
	case errors.Is(err, syscall.EMFILE):
		return "emfile"
	case errors.Is(err, syscall.ENFILE):
		return "enfile"
	}
	return "other"
}
