package controller

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/seed722d2a70/meshproxy/destination"
	pb "github.com/seed722d2a70/meshproxy/destination/destinationpb"
)

// Metrics are the controller's Prometheus metrics. A nil *Metrics is a
// valid no-op.
type Metrics struct {
	reg         prometheus.Registerer
	subscribers prometheus.Gauge
	resolutions *prometheus.CounterVec
	updates     *prometheus.CounterVec
	fanout      prometheus.Histogram
	lag         prometheus.Histogram
	badAnnots   prometheus.Counter
}

// latencyBuckets span 100 µs to 10 s.
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 2.5, 14)

// NewMetrics registers the controller's metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		reg: reg,
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "destination_subscribers",
			Help: "Resolve streams open now.",
		}),
		resolutions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "destination_resolutions_total",
			Help: "Resolve streams opened, by the kind of their first answer.",
		}, []string{"kind"}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "destination_updates_total",
			Help: "Updates sent to subscribers, by type (snapshot, delta).",
		}, []string{"type"}),
		fanout: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "destination_update_fanout_seconds",
			Help:    "From the informer event to the update sent to a subscriber that depends on it.",
			Buckets: latencyBuckets,
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "destination_informer_lag_seconds",
			Help:    "From an EndpointSlice's last-change-trigger-time (the pod or Service change behind it) to the controller's event.",
			Buckets: latencyBuckets,
		}),
		badAnnots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "destination_bad_annotations_total",
			Help: "Objects seen with a malformed opaque-ports annotation, which is ignored.",
		}),
	}
	for _, c := range []prometheus.Collector{m.subscribers, m.resolutions, m.updates, m.fanout, m.lag, m.badAnnots} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// watchStores exports the number of objects each store holds.
func (m *Metrics) watchStores(ix *index) error {
	if m == nil {
		return nil
	}
	for kind, inf := range map[string]interface{ GetStore() cache.Store }{
		"service": ix.services, "endpointslice": ix.slices, "pod": ix.pods, "namespace": ix.namespaces,
	} {
		err := m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "destination_watched_objects",
			Help:        "Objects in the controller's informer stores, by kind.",
			ConstLabels: prometheus.Labels{"kind": kind},
		}, func() float64 { return float64(len(inf.GetStore().ListKeys())) }))
		if err != nil {
			return err
		}
	}
	return nil
}

func (m *Metrics) subscribed(delta float64) {
	if m != nil {
		m.subscribers.Add(delta)
	}
}

func (m *Metrics) resolved(k pb.Kind) {
	if m != nil {
		m.resolutions.WithLabelValues(destination.KindName(k)).Inc()
	}
}

// sent counts u, and its fan-out latency when an event (at unix ns since)
// caused it.
func (m *Metrics) sent(u *pb.Update, since int64) {
	if m == nil {
		return
	}
	if u.GetSnapshot() != nil {
		m.updates.WithLabelValues("snapshot").Inc()
	} else {
		m.updates.WithLabelValues("delta").Inc()
	}
	if since != 0 {
		m.fanout.Observe(time.Since(time.Unix(0, since)).Seconds())
	}
}

// observeEvent records the informer lag of an EndpointSlice event.
func (m *Metrics) observeEvent(obj any, now time.Time) {
	if m == nil {
		return
	}
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	if v := s.Annotations[corev1.EndpointsLastChangeTriggerTime]; v != "" {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			m.lag.Observe(now.Sub(t).Seconds())
		}
	}
}

func (m *Metrics) badAnnotation() {
	if m != nil {
		m.badAnnots.Inc()
	}
}
