package httpproxy

import (
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/metrics"
)

// Labels are the labels of one exchange's series. Like every metric label
// their values must come from small sets: identities and configured
// addresses, never a client's address.
type Labels struct {
	// Direction is "inbound" or "outbound".
	Direction string
	// Authority is the request's :authority (Host).
	Authority string
	// TLS is "true" for mesh mTLS, "no_identity" for an unmeshed
	// destination, "disabled" for plaintext by design.
	TLS string
	// ServerID is the peer proxy's SPIFFE ID on an outbound mTLS request,
	// ClientID the peer's on an inbound one; else empty.
	ServerID string
	ClientID string
	// TargetAddr is the address the request is forwarded to.
	TargetAddr string
	// Dst names the Service the destination controller resolved the
	// request's destination to; its pod is chosen per request, and so is
	// not a label of the request metrics.
	Dst metrics.Dst
}

func (l Labels) values(extra ...string) []string {
	return append([]string{l.Direction, l.Authority, l.TLS, l.ServerID, l.ClientID, l.TargetAddr,
		l.Dst.Service, l.Dst.Namespace}, extra...)
}

var labelNames = []string{"direction", "authority", "tls", "server_id", "client_id", "target_addr", "dst_service", "dst_namespace"}

// LatencyBuckets are Linkerd's response_latency_ms bounds, in milliseconds.
func LatencyBuckets() []float64 {
	return []float64{1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500,
		1_000, 2_000, 3_000, 4_000, 5_000, 10_000, 20_000, 30_000, 40_000, 50_000}
}

// Metrics are the request-level metrics. Create one per registry with
// NewMetrics and share it between the inbound and outbound proxies. A nil
// *Metrics counts nothing.
type Metrics struct {
	requests  *prometheus.CounterVec
	responses *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	errors    *prometheus.CounterVec
	h2errors  *prometheus.CounterVec
	// h2timeouts: connections closed because the peer stopped reading.
	h2timeouts *prometheus.CounterVec

	authorities *metrics.LabelLimit
	targets     *metrics.LabelLimit

	// series caches each exchange's three series by their labels: looked
	// up in the vectors per request, they cost three label hashes and
	// three label slices (all of the HTTP/1 relay's allocations per
	// request). At most maxCachedSeries; beyond, exchanges look up.
	mu     sync.RWMutex
	series map[seriesKey]*exchangeSeries
}

// maxCachedSeries bounds Metrics.series; the labels are bounded each, not
// their combinations.
const maxCachedSeries = 4096

// seriesKey is what tells one exchange's series from another's.
type seriesKey struct {
	l          Labels // bounded
	status     int
	grpcStatus string // grpcStatusLabel's
	failure    bool
	timed      bool // a response head came: the latency series too
}

type exchangeSeries struct {
	requests, responses prometheus.Counter
	latency             prometheus.Observer
}

// MaxAuthorities bounds the distinct values of the authority label. Clients
// choose their Host header, so without a bound any client could grow the
// proxy's series (and memory) without end; requests for authorities beyond
// the first MaxAuthorities are counted under metrics.OtherValue.
const MaxAuthorities = 1000

// maxAuthorityLen bounds the length of an authority label value: a DNS
// name is at most 253 bytes, and a port adds at most 6. The count of values
// is bounded, not their length: a client could give each of its
// MaxAuthorities values a Host as long as a head may be (1 MiB of HTTP/2
// header list), which the proxy would keep for good and every scrape would
// write in each of the authority's series (28 lines per latency series).
const maxAuthorityLen = 253 + len(":65535")

// authority returns the authority label for a request's host: the host,
// lower-cased, or metrics.OtherValue once MaxAuthorities others are in use
// or if it is longer than any host name (then it takes none of them).
func (m *Metrics) authority(host string) string {
	if len(host) > maxAuthorityLen {
		return metrics.OtherValue
	}
	return m.authorities.Value(strings.ToLower(host))
}

// NewMetrics registers the request metrics on reg. targets bounds the
// target_addr label: pass the transport metrics' (metrics.Transport's
// TargetAddrs), so that both count the same destinations under their own
// names; nil gives the request metrics a limit of their own.
func NewMetrics(reg prometheus.Registerer, targets *metrics.LabelLimit) (*Metrics, error) {
	if targets == nil {
		targets = metrics.NewLabelLimit(metrics.MaxTargetAddrs)
	}
	m := &Metrics{
		authorities: metrics.NewLabelLimit(MaxAuthorities),
		targets:     targets,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "request_total",
			Help: "Total count of HTTP requests.",
		}, labelNames),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "response_total",
			Help: "Total count of HTTP responses, by status code, gRPC status and classification.",
		}, append(labelNames[:len(labelNames):len(labelNames)], "status_code", "grpc_status", "classification")),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "response_latency_ms",
			Help:    "Elapsed times between a request's arrival and its response headers, in milliseconds.",
			Buckets: LatencyBuckets(),
		}, append(labelNames[:len(labelNames):len(labelNames)], "status_code")),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_proxy_errors_total",
			Help: "HTTP requests the proxy answered itself because forwarding failed, by reason.",
		}, []string{"direction", "reason"}),
		h2errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http2_connection_errors_total",
			Help: "HTTP/2 connections the relay ended because the peer broke the protocol, by HTTP/2 error code.",
		}, []string{"direction", "peer", "code"}),
		h2timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http2_write_timeouts_total",
			Help: "HTTP/2 connections the relay closed because the peer (src: client, dst: upstream) took none of what it wrote for the write timeout.",
		}, []string{"direction", "peer"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.responses, m.latency, m.errors, m.h2errors, m.h2timeouts} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// record counts one finished exchange.
func (m *Metrics) record(l Labels, ex *exchange) {
	if m == nil {
		return
	}
	if l.Authority != "" {
		l.Authority = m.authority(l.Authority)
	}
	if l.TargetAddr != "" {
		// Bounded like the tcp_* series' target_addr.
		l.TargetAddr = m.targets.Value(l.TargetAddr)
	}
	l.Dst.Pod = "" // not a label: it would only multiply the cached keys
	k := seriesKey{l: l, status: ex.status, grpcStatus: grpcStatusLabel(ex.grpcStatus),
		failure: ex.classification() == "failure", timed: !ex.headersAt.IsZero()}
	es := m.exchangeSeries(k)
	es.requests.Inc()
	es.responses.Inc()
	if k.timed {
		ms := float64(ex.headersAt.Sub(ex.start).Microseconds()) / 1000
		es.latency.Observe(ms)
	}
}

// exchangeSeries returns k's series, from the cache or the vectors.
func (m *Metrics) exchangeSeries(k seriesKey) *exchangeSeries {
	m.mu.RLock()
	es, ok := m.series[k]
	m.mu.RUnlock()
	if ok {
		return es
	}
	code := ""
	if k.status != 0 {
		code = strconv.Itoa(k.status)
	}
	class := "success"
	if k.failure {
		class = "failure"
	}
	es = &exchangeSeries{
		requests:  m.requests.WithLabelValues(k.l.values()...),
		responses: m.responses.WithLabelValues(k.l.values(code, k.grpcStatus, class)...),
	}
	if k.timed {
		es.latency = m.latency.WithLabelValues(k.l.values(code)...)
	}
	m.mu.Lock()
	if m.series == nil {
		m.series = make(map[seriesKey]*exchangeSeries)
	}
	if len(m.series) < maxCachedSeries {
		m.series[k] = es
	}
	m.mu.Unlock()
	return es
}

// grpcStatusLabel is the grpc_status label of a response's grpc-status:
// a status code (0 to 16, as gRPC defines them), empty for none, and
// metrics.OtherValue for anything else. The upstream chooses the value, so
// taken as it came any server could grow the proxy's series without end.
func grpcStatusLabel(v string) string {
	if v == "" {
		return ""
	}
	if len(v) > 2 { // no parse: its error would copy the value
		return metrics.OtherValue
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= 16 && strconv.Itoa(n) == v {
		return v
	}
	return metrics.OtherValue
}

func (m *Metrics) proxyError(direction, reason string) {
	if m != nil {
		m.errors.WithLabelValues(direction, reason).Inc()
	}
}

// authorityField is a log field of a request's authority, cut to the
// longest host name: a client chooses it, up to a whole header's size,
// and even a rate-limited line should not carry a megabyte of it.
func authorityField(a string) zap.Field {
	if len(a) > maxAuthorityLen {
		a = a[:maxAuthorityLen] + "...(cut)"
	}
	return zap.String("authority", a)
}
