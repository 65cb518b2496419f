package controller

import (
	"sync"
	"sync/atomic"
)

// A topic is what the subscriptions to one target share: the keys its
// answer depends on, and the answer itself, computed once per change for
// all of them. Each answer that differs from the one before is a new
// version, which keeps the update from its predecessor: a subscriber that
// sent the predecessor sends that same update, encoded once. A subscriber
// that is new, or that fell further behind while it was sending, makes its
// own from where it is (a snapshot, or a delta from its last version).
// Nobody computes while holding up a send, so a slow subscriber delays no
// other.
type topic struct {
	target target
	// stale is set when an object the answer read changed; the next
	// subscriber to look recomputes.
	stale atomic.Bool

	mu  sync.Mutex // held while computing, never while sending
	cur *version   // nil until first computed

	// Guarded by Controller.mu.
	subs    map[*subscription]struct{}
	deps    []key
	dropped bool // its last subscriber left: it registers nothing more
}

// version is one of a topic's answers. It never changes once published.
type version struct {
	n      uint64
	answer *answer
	// update takes a subscriber from version n-1 to this one; for the first
	// version, and when the kind or the Service changed, it is a snapshot.
	update *sharedUpdate

	snapOnce sync.Once
	snap     *sharedUpdate // the whole answer, for new subscribers
}

// subscription is one Resolve stream.
type subscription struct {
	wake chan struct{} // capacity 1: wakes coalesce
	// since is when the oldest event not yet answered arrived (unix ns),
	// for the fan-out latency; 0 when none is pending.
	since atomic.Int64
}

// join adds s to the topic of t, which it creates when t has none.
func (c *Controller) join(t target, s *subscription) *topic {
	c.mu.Lock()
	defer c.mu.Unlock()
	tp := c.topics[t]
	if tp == nil {
		tp = &topic{target: t, subs: map[*subscription]struct{}{}}
		tp.stale.Store(true)
		c.topics[t] = tp
	}
	tp.subs[s] = struct{}{}
	return tp
}

// leave removes s from tp, and drops tp when s was its last subscriber.
func (c *Controller) leave(tp *topic, s *subscription) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(tp.subs, s)
	if len(tp.subs) > 0 {
		return
	}
	delete(c.topics, tp.target)
	c.setDeps(tp, nil)
	tp.dropped = true
}

// register replaces tp's dependencies.
func (c *Controller) register(tp *topic, deps []key) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !tp.dropped {
		c.setDeps(tp, deps)
	}
}

// setDeps replaces tp's dependencies; c.mu is held.
func (c *Controller) setDeps(tp *topic, deps []key) {
	for _, k := range tp.deps {
		if m := c.deps[k]; m != nil {
			delete(m, tp)
			if len(m) == 0 {
				delete(c.deps, k)
			}
		}
	}
	tp.deps = deps
	for _, k := range deps {
		m := c.deps[k]
		if m == nil {
			m = map[*topic]struct{}{}
			c.deps[k] = m
		}
		m[tp] = struct{}{}
	}
}

// latest returns tp's current version, computing it first when an object
// it read changed. Subscribers woken by the same event wait here for the
// first one's computation and share its result.
func (c *Controller) latest(tp *topic) *version {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if !tp.stale.Load() {
		return tp.cur
	}
	for attempt := 1; ; attempt++ {
		tp.stale.Store(false)
		// An event between computing and registering would find the old
		// keys registered: one of the new keys touched since g says one
		// came, and the answer is computed again. Under steady churn of
		// those very objects that could go on, holding tp.mu: after a few
		// tries the answer is published as it is, the topic left stale
		// and its subscribers woken, so the next computation comes after
		// their sends.
		g := c.gen.Load()
		a, deps := c.res.resolve(tp.target)
		c.register(tp, deps)
		if !c.touchedSince(deps, g) {
			tp.publish(&a)
			return tp.cur
		}
		if attempt == maxComputeAttempts {
			tp.publish(&a)
			tp.stale.Store(true)
			c.wake(tp)
			return tp.cur
		}
	}
}

// touchedSince reports whether an event touched one of keys (or a key in
// one of their buckets) after event count g.
func (c *Controller) touchedSince(keys []key, g uint64) bool {
	for _, k := range keys {
		if c.keyGens[k.bucket()].Load() > g {
			return true
		}
	}
	return false
}

// maxComputeAttempts bounds latest's retries.
const maxComputeAttempts = 3

// wake wakes tp's subscribers.
func (c *Controller) wake(tp *topic) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range tp.subs {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// publish makes a the current version, unless it is no change; tp.mu is
// held.
func (tp *topic) publish(a *answer) {
	var prev *answer
	n := uint64(1)
	if tp.cur != nil {
		prev, n = tp.cur.answer, tp.cur.n+1
	}
	u := diff(prev, a)
	if u == nil {
		return
	}
	v := &version{n: n, answer: a, update: &sharedUpdate{Update: u}}
	if u.GetSnapshot() != nil {
		v.snap = v.update
	}
	tp.cur = v
}

// updateFrom returns the update that takes a subscriber from last (nil:
// nothing sent yet) to v, or nil when there is nothing to send.
func (v *version) updateFrom(last *version) *sharedUpdate {
	switch {
	case last == nil:
		return v.snapshot()
	case last == v:
		return nil
	case last.n+1 == v.n:
		return v.update
	}
	// Behind by more than one version: a change of its own, which may also
	// be none (a change and its undoing).
	if u := diff(last.answer, v.answer); u != nil {
		return &sharedUpdate{Update: u}
	}
	return nil
}

// snapshot is v's whole answer as a snapshot, made once for all the
// subscribers that start at v.
func (v *version) snapshot() *sharedUpdate {
	v.snapOnce.Do(func() {
		if v.snap == nil {
			v.snap = &sharedUpdate{Update: diff(nil, v.answer)}
		}
	})
	return v.snap
}
