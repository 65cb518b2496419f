package detect

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts detections and measures how long they take. Users asked
// Linkerd for exactly these (a detection-latency histogram and a timeout
// counter) to find server-first protocols on ports not declared opaque. A
// nil *Metrics records nothing.
type Metrics struct {
	total    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics creates the detection metrics and registers them on reg:
//
//	protocol_detect_total{direction, result}    counter
//	protocol_detect_duration_ms{direction}       histogram
//
// A nil reg leaves them unregistered, which is handy in tests.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "protocol_detect_total",
			Help: "Protocol detections by direction and result (http1, http2, opaque, timeout, empty).",
		}, []string{"direction", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "protocol_detect_duration_ms",
			Help: "Time spent detecting the protocol of a connection, in milliseconds.",
			// From 10 µs (data already buffered) to the 10 s default
			// timeout, roughly three buckets a decade.
			Buckets: []float64{
				0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
				1, 2.5, 5, 10, 25, 50, 100, 250, 500,
				1000, 2500, 5000, 10000,
			},
		}, []string{"direction"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.total, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering protocol detection metrics: %w", err)
		}
	}
	return m, nil
}

// Observe records one detection that ended with outcome o after elapsed. It
// is for outcomes decided outside Detect (Detect records its own); it is
// safe on a nil *Metrics.
func (m *Metrics) Observe(direction string, o Outcome, elapsed time.Duration) {
	if m == nil {
		return
	}
	m.total.WithLabelValues(direction, string(o)).Inc()
	m.duration.WithLabelValues(direction).Observe(millis(elapsed))
}

// numKnownOutcomes is how many outcomes Detect itself produces.
const numKnownOutcomes = 5

// knownOutcomes returns the outcomes whose series Detect resolves up front.
func knownOutcomes() [numKnownOutcomes]Outcome {
	return [...]Outcome{OutcomeHTTP1, OutcomeHTTP2, OutcomeOpaque, OutcomeTimeout, OutcomeEmpty}
}

// directionMetrics holds one direction's series, resolved once so that
// recording a detection is a few atomic adds with no label lookups.
type directionMetrics struct {
	m         *Metrics
	direction string
	totals    [numKnownOutcomes]prometheus.Counter
	duration  prometheus.Observer
}

// forDirection resolves m's series for direction. It returns nil for a nil
// m. Resolving also creates the counters at zero, so every result shows up
// in a scrape before it first happens.
func (m *Metrics) forDirection(direction string) *directionMetrics {
	if m == nil {
		return nil
	}
	dm := &directionMetrics{m: m, direction: direction, duration: m.duration.WithLabelValues(direction)}
	for i, o := range knownOutcomes() {
		dm.totals[i] = m.total.WithLabelValues(direction, string(o))
	}
	return dm
}

// observe records one detection; it is safe on a nil receiver.
func (dm *directionMetrics) observe(o Outcome, elapsed time.Duration) {
	if dm == nil {
		return
	}
	for i, k := range knownOutcomes() {
		if k == o {
			dm.totals[i].Inc()
			dm.duration.Observe(millis(elapsed))
			return
		}
	}
	dm.m.Observe(dm.direction, o, elapsed)
}

// millis converts d to fractional milliseconds.
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
