package httpproxy

import (
	"net/http"
	"sync"
	"time"
)

// PoolIdleAfter is how long a pool in Pools may go unused before it is
// dropped. Connections still using a dropped pool are unaffected: they hold
// its transport; only its idle connections are closed.
const PoolIdleAfter = 10 * time.Minute

// Pools are upstream transports keyed by what their connections are made
// for (K: an address, a protocol, the peer's identity, ...), each created
// on first use and shared from then on. Pools unused for PoolIdleAfter are
// dropped, so destinations, peers and table reloads seen over a proxy's
// long life do not accumulate. The zero value is empty and ready to use.
type Pools[K comparable] struct {
	mu    sync.Mutex
	m     map[K]*pool
	swept time.Time
}

type pool struct {
	t        *http.Transport
	lastUsed time.Time
}

// Get returns key's transport, calling create for a new one if key has
// none, at the time now. It drops, at most once per PoolIdleAfter, the
// pools unused that long.
func (ps *Pools[K]) Get(key K, now time.Time, create func() *http.Transport) *http.Transport {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if now.Sub(ps.swept) >= PoolIdleAfter {
		ps.swept = now
		for k, p := range ps.m {
			if now.Sub(p.lastUsed) >= PoolIdleAfter {
				p.t.CloseIdleConnections()
				delete(ps.m, k)
			}
		}
	}
	if p, ok := ps.m[key]; ok {
		p.lastUsed = now
		return p.t
	}
	if ps.m == nil {
		ps.m = map[K]*pool{}
	}
	t := create()
	ps.m[key] = &pool{t: t, lastUsed: now}
	return t
}

// Len returns the number of pools.
func (ps *Pools[K]) Len() int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return len(ps.m)
}

// CloseIdle closes every pooled connection not carrying a request.
func (ps *Pools[K]) CloseIdle() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, p := range ps.m {
		p.t.CloseIdleConnections()
	}
}
