// Package balance chooses among a destination's endpoints the way
// Linkerd's proxy does: the power of two choices over a peak-EWMA load
// estimate. Two endpoints are drawn at random and the one with the lower
// load wins, where load is the endpoint's latency estimate times its work
// in flight plus one. The estimate jumps to any slower observation at once
// (peak) and otherwise follows observations with exponential decay; it also
// decays toward zero while an endpoint goes unused, so an endpoint that was
// slow once is tried again. Estimates below MinRTT, or within Tolerance of
// each other, count as equal (see less), so that equally fast endpoints
// share the load evenly. Endpoints that failed to connect are passed over
// for a while unless nothing else is left.
package balance

import (
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// Defaults. Linkerd's proxy decays its estimates with a 10 s time constant;
// on sub-millisecond latencies, where a stalled request is ten or thirty
// times the usual, that idles the endpoint it hit for tens of seconds, and
// three equal replicas then share one client's requests 1:30:69. A shorter
// memory, a bounded step up and a tolerance band (see less) keep them even,
// while an endpoint ten times slower than its peers still gets about 1%.
const (
	// DefaultDecay is the time constant of the latency estimate.
	DefaultDecay = 500 * time.Millisecond
	// MinRTT is the least estimate the balancer tells apart: endpoints
	// whose estimates are both below it count as equally fast. Differences
	// under a millisecond are scheduling noise, not load, and one noisy
	// peak would otherwise keep an endpoint idle for seconds.
	MinRTT = time.Millisecond
	// PeakStep bounds how far one observation raises an estimate: a
	// slower observation raises it at once, but at most this many times
	// (from at least MinRTT), so that one stalled request does not idle an
	// endpoint while a really slower one reaches its level in a few.
	PeakStep = 2
	// Tolerance is the ratio of two estimates below which the balancer
	// counts them as equal.
	Tolerance = 4
	// FailurePenalty is how long an endpoint that failed to connect is
	// passed over.
	FailurePenalty = 5 * time.Second
)

// Balancer holds the endpoints of one destination and their estimates. Its
// methods are safe for concurrent use.
type Balancer struct {
	decay     time.Duration
	peakStep  float64
	tolerance float64
	now       func() time.Time

	mu   sync.Mutex
	eps  []*endpoint // the current set, in a stable order
	byID map[string]*endpoint
}

type endpoint struct {
	id          string
	rtt         float64 // the estimate, in ns, as of stamp
	stamp       time.Time
	pending     int
	failedUntil time.Time
}

// New returns an empty balancer whose estimates decay with time constant
// decay (DefaultDecay when 0).
func New(decay time.Duration) *Balancer {
	if decay <= 0 {
		decay = DefaultDecay
	}
	return &Balancer{decay: decay, peakStep: PeakStep, tolerance: Tolerance, now: time.Now, byID: map[string]*endpoint{}}
}

// Update replaces the set of endpoints with ids. Endpoints that stay keep
// their estimates and the work in flight they have.
func (b *Balancer) Update(ids []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	byID := make(map[string]*endpoint, len(ids))
	eps := make([]*endpoint, 0, len(ids))
	for _, id := range ids {
		if _, dup := byID[id]; dup {
			continue
		}
		e := b.byID[id]
		if e == nil {
			// No estimate yet: zero, so that a new endpoint is tried at
			// once rather than starved until a made-up estimate decays.
			e = &endpoint{id: id, stamp: now}
		}
		byID[id] = e
		eps = append(eps, e)
	}
	b.eps, b.byID = eps, byID
}

// Len returns the number of endpoints.
func (b *Balancer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.eps)
}

// Pick chooses an endpoint not in skip (ids tried already for this
// connection or request), and counts one unit of work on it until the
// returned Handle's Done. It returns false when every endpoint is skipped
// or there is none.
func (b *Balancer) Pick(skip map[string]bool) (*Handle, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	candidates := make([]*endpoint, 0, len(b.eps))
	healthy := 0
	for _, e := range b.eps {
		if skip[e.id] {
			continue
		}
		candidates = append(candidates, e)
		if !now.Before(e.failedUntil) {
			// Healthy ones first: they are drawn from when any exist.
			candidates[healthy], candidates[len(candidates)-1] = candidates[len(candidates)-1], candidates[healthy]
			healthy++
		}
	}
	if healthy > 0 {
		candidates = candidates[:healthy]
	}
	var e *endpoint
	switch len(candidates) {
	case 0:
		return nil, false
	case 1:
		e = candidates[0]
	default:
		i := rand.IntN(len(candidates))
		j := rand.IntN(len(candidates) - 1)
		if j >= i {
			j++
		}
		e = candidates[i]
		if b.less(candidates[j], e, now) {
			e = candidates[j]
		}
	}
	e.pending++
	return &Handle{b: b, e: e, start: now}, true
}

// less reports whether a is the less loaded of two endpoints. Load is the
// latency estimate (decayed to now, at least MinRTT) times the work in
// flight plus one, except that estimates within Tolerance of each other
// count as equal: then the work in flight alone decides. Latencies measured
// at low load are mostly noise, and a noisy peak must not idle an endpoint
// for the seconds its estimate takes to decay; an endpoint that is really
// slower, or busier, still loses.
func (b *Balancer) less(a, c *endpoint, now time.Time) bool {
	ea, ec := max(b.estimate(a, now), float64(MinRTT)), max(b.estimate(c, now), float64(MinRTT))
	if max(ea, ec) < b.tolerance*min(ea, ec) {
		return a.pending < c.pending
	}
	return ea*float64(a.pending+1) < ec*float64(c.pending+1)
}

func (b *Balancer) estimate(e *endpoint, now time.Time) float64 {
	elapsed := now.Sub(e.stamp)
	if elapsed <= 0 {
		return e.rtt
	}
	return e.rtt * math.Exp(-float64(elapsed)/float64(b.decay))
}

// Handle is one unit of work on a chosen endpoint.
type Handle struct {
	b     *Balancer
	e     *endpoint
	start time.Time
	done  bool
}

// ID returns the chosen endpoint's id.
func (h *Handle) ID() string { return h.e.id }

// Pending returns the chosen endpoint's units of work in flight, this one
// included until Done.
func (h *Handle) Pending() int {
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	return h.e.pending
}

// Observe records a latency measured on the endpoint (a connect, a
// response): the estimate jumps to a slower one and decays toward a faster
// one.
func (h *Handle) Observe(rtt time.Duration) {
	b := h.b
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	est, sample := b.estimate(h.e, now), float64(rtt)
	if sample > est {
		h.e.rtt = min(sample, b.peakStep*max(est, float64(MinRTT)))
	} else {
		w := math.Exp(-float64(now.Sub(h.e.stamp)) / float64(b.decay))
		h.e.rtt = est*w + sample*(1-w)
	}
	h.e.stamp = now
}

// Fail marks the endpoint as failing to connect: it is passed over for
// FailurePenalty unless nothing else is left. Done must still be called.
func (h *Handle) Fail() {
	b := h.b
	b.mu.Lock()
	defer b.mu.Unlock()
	h.e.failedUntil = b.now().Add(FailurePenalty)
}

// Done ends the unit of work. Calling it again does nothing.
func (h *Handle) Done() {
	b := h.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if h.done {
		return
	}
	h.done = true
	h.e.pending--
}
