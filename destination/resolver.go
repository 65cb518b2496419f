package destination

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	pb "github.com/seed722d2a70/meshproxy/destination/destinationpb"
)

// WatchIdleAfter is how long a Resolver keeps watching an address nobody
// asked for and no connection's balancer read.
const WatchIdleAfter = 10 * time.Minute

// MaxWatches bounds the addresses a Resolver watches at once. Apps choose
// the addresses (a port scan would open a watch per port), so past the
// bound the least recently used watch is stopped; its users keep its last
// state.
const MaxWatches = 10000

// Resolver answers "what is at this address?" for a proxy's connections:
// the first question about an address starts one watch, which every later
// connection shares, so no connection makes an RPC of its own. Its methods
// are safe for concurrent use.
type Resolver struct {
	client     *Client
	wait       time.Duration
	maxWatches int
	metrics    *ResolverMetrics
	ctx        context.Context
	stop       context.CancelFunc

	mu      sync.Mutex
	watches map[string]*resolverEntry
	swept   time.Time
}

type resolverEntry struct {
	w      *Watch
	cancel context.CancelFunc
	// timedOut: a lookup waited the whole wait for the first answer.
	// Later ones do not wait again until there is one: while the
	// controller is down, new connections to the address go to the table
	// at once.
	timedOut atomic.Bool
}

// NewResolver returns a resolver over client. An address never resolved
// before waits at most wait for its first answer. m may be nil.
func NewResolver(client *Client, wait time.Duration, m *ResolverMetrics) *Resolver {
	ctx, stop := context.WithCancel(context.Background())
	return &Resolver{client: client, wait: wait, maxWatches: MaxWatches, metrics: m, ctx: ctx, stop: stop, watches: map[string]*resolverEntry{}}
}

// Resolve returns the watch of address once the controller has answered
// for it, and false when it has not: the address was never answered within
// the wait, the controller being down or slow. The caller then uses its own
// configuration. Once answered, an address keeps its last answer through
// outages. The watch's state follows the controller's updates: callers that
// keep it (a long-lived connection's balancer) read it again to see them.
func (r *Resolver) Resolve(ctx context.Context, address string) (*Watch, bool) {
	e := r.watch(address)
	w := e.w
	s, ok := w.State()
	if !ok && e.timedOut.Load() {
		r.metrics.lookup("timeout")
		return nil, false
	}
	if !ok {
		t := time.NewTimer(r.wait)
		defer t.Stop()
		for !ok {
			changed := w.Changed()
			if s, ok = w.State(); ok {
				break
			}
			select {
			case <-changed:
			case <-t.C:
				r.metrics.lookup("timeout")
				// Once per address: a controller outage would otherwise
				// log every connection.
				if e.timedOut.CompareAndSwap(false, true) {
					r.client.log.Warn("the destination controller has not answered; the destination table decides until it does",
						zap.String("address", address), zap.Duration("waited", r.wait))
				}
				return nil, false
			case <-ctx.Done():
				return nil, false
			}
		}
	}
	r.metrics.lookup(KindName(s.Kind))
	return w, true
}

// watch returns address's entry, starting its watch if there is none. It
// stops the watches unused for WatchIdleAfter (checked at most once a
// minute), and the least recently used one when MaxWatches are running. A
// watch counts as used when it is looked up or its state is read, so the
// watch of a long-lived connection's balancer stays.
func (r *Resolver) watch(address string) *resolverEntry {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.swept) >= time.Minute {
		r.swept = now
		for a, e := range r.watches {
			if now.Sub(e.w.lastUsed()) >= WatchIdleAfter {
				r.drop(a, e)
			}
		}
	}
	e := r.watches[address]
	if e == nil {
		if len(r.watches) >= r.maxWatches {
			r.dropOldest()
		}
		ctx, cancel := context.WithCancel(r.ctx)
		e = &resolverEntry{w: r.client.Watch(ctx, address), cancel: cancel}
		r.watches[address] = e
		r.metrics.watching(len(r.watches))
	}
	e.w.touch(now)
	return e
}

// drop stops a's watch; r.mu is held.
func (r *Resolver) drop(a string, e *resolverEntry) {
	e.cancel()
	delete(r.watches, a)
	r.metrics.watching(len(r.watches))
}

// dropOldest stops the least recently used watch; r.mu is held.
func (r *Resolver) dropOldest() {
	var (
		oldest string
		at     time.Time
	)
	for a, e := range r.watches {
		if u := e.w.lastUsed(); oldest == "" || u.Before(at) {
			oldest, at = a, u
		}
	}
	if e := r.watches[oldest]; e != nil {
		r.drop(oldest, e)
		r.metrics.evicted()
	}
}

// Close stops every watch and waits for them.
func (r *Resolver) Close() {
	r.stop()
	r.mu.Lock()
	ws := make([]*Watch, 0, len(r.watches))
	for _, e := range r.watches {
		ws = append(ws, e.w)
	}
	r.watches = map[string]*resolverEntry{}
	r.mu.Unlock()
	for _, w := range ws {
		<-w.Done()
	}
	r.metrics.watching(0)
}

// KindName is k's name in metric labels: service, pod or unknown.
func KindName(k pb.Kind) string {
	switch k {
	case pb.Kind_KIND_SERVICE:
		return "service"
	case pb.Kind_KIND_POD:
		return "pod"
	}
	return "unknown"
}

// ResolverMetrics are a proxy's metrics of its resolutions. A nil
// *ResolverMetrics counts nothing.
type ResolverMetrics struct {
	lookups   *prometheus.CounterVec
	watches   prometheus.Gauge
	evictions prometheus.Counter
}

// NewResolverMetrics registers the metrics on reg.
func NewResolverMetrics(reg prometheus.Registerer) (*ResolverMetrics, error) {
	m := &ResolverMetrics{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbound_destination_lookups_total",
			Help: "Connections' lookups of their destination with the destination controller, by result: service, pod, unknown, or timeout (never answered within the wait: the proxy's own configuration was used).",
		}, []string{"result"}),
		watches: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbound_destination_watches",
			Help: "Destinations watched through the destination controller.",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbound_destination_watch_evictions_total",
			Help: "Watches stopped because the proxy watched as many destinations as it may; their users keep the last state.",
		}),
	}
	for _, c := range []prometheus.Collector{m.lookups, m.watches, m.evictions} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *ResolverMetrics) lookup(result string) {
	if m != nil {
		m.lookups.WithLabelValues(result).Inc()
	}
}

func (m *ResolverMetrics) evicted() {
	if m != nil {
		m.evictions.Inc()
	}
}

func (m *ResolverMetrics) watching(n int) {
	if m != nil {
		m.watches.Set(float64(n))
	}
}
