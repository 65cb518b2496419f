// Package metrics holds the transport metrics shared by the inbound and
// outbound proxies, named and labelled as the Linkerd proxy names them so that
// existing dashboards and queries work: tcp_open_total,
// tcp_open_connections, tcp_read_bytes_total, tcp_write_bytes_total,
// tcp_close_total and tcp_connection_duration_ms.
//
// A proxy counts a connection by wrapping it with Transport.Track as soon as
// it is accepted or dialed; the returned conn counts its bytes and records its
// end when closed.
package metrics

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Values of the direction, peer and tls labels.
const (
	// DirectionInbound marks connections handled by the inbound proxy.
	DirectionInbound = "inbound"
	// DirectionOutbound marks connections handled by the outbound proxy.
	DirectionOutbound = "outbound"

	// PeerSrc marks the connection the proxy accepted, from its client.
	PeerSrc = "src"
	// PeerDst marks the connection the proxy dialed, to its destination.
	PeerDst = "dst"

	// TLSTrue marks a connection secured with mutual TLS.
	TLSTrue = "true"
	// TLSNoIdentity marks a plaintext connection that would have been mTLS
	// had the proxy held an identity.
	TLSNoIdentity = "no_identity"
	// TLSDisabled marks a plaintext connection that is plaintext by design:
	// the app's own connection to its proxy, or an unmeshed destination.
	TLSDisabled = "disabled"
)

// Labels are the labels common to every transport metric. Every value must
// come from a small set, since each distinct combination is a time series that
// lives as long as the process: never put a client's address or port here.
type Labels struct {
	// Direction is DirectionInbound or DirectionOutbound.
	Direction string
	// Peer is PeerSrc or PeerDst.
	Peer string
	// TLS is TLSTrue, TLSNoIdentity or TLSDisabled.
	TLS string
	// ClientID is the peer's SPIFFE ID on an inbound mTLS src connection,
	// else empty.
	ClientID string
	// ServerID is the peer's SPIFFE ID on an outbound mTLS dst connection,
	// else empty.
	ServerID string
	// TargetAddr is, on a dst connection, the ip:port the proxy dials; on a
	// src connection, the proxy's own listening address (or, for an inbound
	// connection carrying a transport header, the local target it names).
	TargetAddr string
	// Dst is, on an outbound dst connection to a destination the
	// destination controller resolved, its Service and pod; else empty.
	Dst Dst
}

// Dst names a destination as the destination controller resolved it, in
// Linkerd's dst_* labels.
type Dst struct {
	Service, Namespace, Pod string
}

// values returns the label values in the order of labelNames.
func (l Labels) values(extra ...string) []string {
	return append([]string{l.Direction, l.Peer, l.TLS, l.ClientID, l.ServerID, l.TargetAddr,
		l.Dst.Service, l.Dst.Namespace, l.Dst.Pod}, extra...)
}

// labelNames returns the names of the common labels, followed by extra.
func labelNames(extra ...string) []string {
	return append([]string{"direction", "peer", "tls", "client_id", "server_id", "target_addr",
		"dst_service", "dst_namespace", "dst_pod"}, extra...)
}

// DurationBuckets are the tcp_connection_duration_ms histogram bounds, in
// milliseconds: one per power of ten from 1 ms to about 2.8 hours, as
// connection lifetimes span that whole range.
func DurationBuckets() []float64 {
	return []float64{1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000}
}

// MaxTargetAddrs bounds the distinct values of target_addr: a pod may dial
// any number of destinations, and each would be a series forever. Later
// ones are counted as target_addr="other".
const MaxTargetAddrs = 1000

// Transport holds the transport metrics. Create one per registry with
// NewTransport and share it between the inbound and outbound proxies. A nil
// *Transport is valid and counts nothing.
type Transport struct {
	targets    *LabelLimit
	openTotal  *prometheus.CounterVec
	open       *prometheus.GaugeVec
	readBytes  *prometheus.CounterVec
	writeBytes *prometheus.CounterVec
	closeTotal *prometheus.CounterVec
	duration   *prometheus.HistogramVec
}

// NewTransport creates the transport metrics and registers them on reg. A nil
// reg leaves them unregistered (they still count, for tests). It fails if reg
// already holds metrics of the same names, registering none of them then.
func NewTransport(reg prometheus.Registerer) (*Transport, error) {
	t := &Transport{
		targets: NewLabelLimit(MaxTargetAddrs),
		openTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcp_open_total",
			Help: "Total count of opened connections.",
		}, labelNames()),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tcp_open_connections",
			Help: "Number of currently-open connections.",
		}, labelNames()),
		readBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcp_read_bytes_total",
			Help: "Total count of bytes read from peers.",
		}, labelNames()),
		writeBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcp_write_bytes_total",
			Help: "Total count of bytes written to peers.",
		}, labelNames()),
		closeTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcp_close_total",
			Help: "Total count of closed connections, by the OS error that ended them (errno, empty if none).",
		}, labelNames("errno")),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tcp_connection_duration_ms",
			Help:    "Connection lifetimes, in milliseconds.",
			Buckets: DurationBuckets(),
		}, labelNames()),
	}
	if reg == nil {
		return t, nil
	}
	cs := []prometheus.Collector{t.openTotal, t.open, t.readBytes, t.writeBytes, t.closeTotal, t.duration}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("metrics: registering transport metrics: %w", err)
		}
	}
	return t, nil
}

// TargetAddrs returns the limit on target_addr values, for other metrics
// that label by destination to share.
func (t *Transport) TargetAddrs() *LabelLimit { return t.targets }

// Track counts c as an open connection with labels l and returns a conn that
// counts the bytes read and written through it and, when closed, records the
// close and the connection's lifetime. Wrap a connection once, as soon as it
// is accepted or dialed, and close the returned conn rather than c. Track on a
// nil *Transport returns c itself.
func (t *Transport) Track(c net.Conn, l Labels) net.Conn {
	if t == nil || c == nil {
		return c
	}
	if l.TargetAddr != "" {
		l.TargetAddr = t.targets.Value(l.TargetAddr)
		if l.TargetAddr == OtherValue {
			// A pod per target address: past the bound, the pod would
			// keep the series unbounded.
			l.Dst.Pod = ""
		}
	}
	vals := l.values()
	t.openTotal.WithLabelValues(vals...).Inc()
	open := t.open.WithLabelValues(vals...)
	open.Inc()
	return &Conn{
		conn:     c,
		t:        t,
		labels:   l,
		read:     t.readBytes.WithLabelValues(vals...),
		written:  t.writeBytes.WithLabelValues(vals...),
		open:     open,
		duration: t.duration.WithLabelValues(vals...),
		start:    time.Now(),
	}
}

// errUnsupported is wrapped by CloseWrite and CloseRead of a Conn whose
// underlying conn lacks them.
func errUnsupported(c net.Conn, method string) error {
	return fmt.Errorf("metrics: %T has no %s: %w", c, method, errors.ErrUnsupported)
}
