package httpproxy

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// PoolIdleAfter is how long a pool in Pools may go without a request
// before it is dropped. Its idle connections are closed then; a request
// still under way on it finishes normally.
const PoolIdleAfter = 10 * time.Minute

// Pools are upstream transports keyed by what their connections are made
// for (K: an address, a protocol, the peer's identity, ...), each created
// on first use and shared from then on. Pools without a request for
// PoolIdleAfter are dropped, so destinations, peers and table reloads seen
// over a proxy's long life do not accumulate. The zero value is empty and
// ready to use.
type Pools[K comparable] struct {
	mu    sync.Mutex
	m     map[K]*Pool
	swept time.Time
}

// Pool is one transport of Pools: an http.RoundTripper, and an Upstream
// for the HTTP/1 relay with connections of its own, dialed as the
// transport's. It records when it was last used.
type Pool struct {
	t        *http.Transport
	h2c      *h2cTransport // carries the requests of an HTTP/2 pool; nil for HTTP/1
	h1       *connPool
	lastUsed atomic.Int64 // Unix nanoseconds of the last request or Get
	h2once   sync.Once
	h2       atomic.Pointer[H2Pool]
}

// H2 returns the pool's connections for the HTTP/2 relay: made with the
// transport's dial, response timeout and idle timeout, and kept alive by
// the relay's streams as requests keep the transport alive.
func (p *Pool) H2() *H2Pool {
	p.h2once.Do(func() {
		h := NewH2Pool(TransportConfig{
			Dial:            func(ctx context.Context) (net.Conn, error) { return p.t.DialContext(ctx, "tcp", "") },
			ResponseTimeout: p.t.ResponseHeaderTimeout,
			IdleTimeout:     p.t.IdleConnTimeout,
		})
		h.lastUsed = &p.lastUsed
		p.h2.Store(h)
	})
	return p.h2.Load()
}

// Conn lends the HTTP/1 relay a connection: Pool is its Upstream.
func (p *Pool) Conn(ctx context.Context, _ bool) (*UpstreamConn, Lease, error) {
	p.lastUsed.Store(time.Now().UnixNano())
	c, err := p.h1.get(ctx)
	return c, nil, err
}

// newPool returns a pool of t's connections.
func newPool(t *http.Transport) *Pool {
	return &Pool{t: t, h2c: newH2CTransport(t), h1: newConnPool(t)}
}

func (p *Pool) closeIdle() {
	p.t.CloseIdleConnections()
	if p.h2c != nil {
		p.h2c.CloseIdleConnections()
	}
	p.h1.closeIdle()
	if h := p.h2.Load(); h != nil {
		h.CloseIdle()
	}
}

// RoundTrip sends r through the pool's transport.
func (p *Pool) RoundTrip(r *http.Request) (*http.Response, error) {
	p.lastUsed.Store(time.Now().UnixNano())
	if p.h2c != nil {
		return p.h2c.RoundTrip(r)
	}
	return p.t.RoundTrip(r)
}

func (p *Pool) idleSince(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, p.lastUsed.Load()))
}

// Get returns key's pool, calling create for a new transport if key has
// none, at the time now. It drops, at most once per PoolIdleAfter, the
// pools without a request for that long: a client connection that holds
// a pool and keeps using it keeps it alive.
func (ps *Pools[K]) Get(key K, now time.Time, create func() *http.Transport) *Pool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if now.Sub(ps.swept) >= PoolIdleAfter {
		ps.swept = now
		for k, p := range ps.m {
			if p.idleSince(now) >= PoolIdleAfter {
				p.closeIdle()
				delete(ps.m, k)
			}
		}
	}
	if p, ok := ps.m[key]; ok {
		p.lastUsed.Store(now.UnixNano())
		return p
	}
	if ps.m == nil {
		ps.m = map[K]*Pool{}
	}
	p := newPool(create())
	p.lastUsed.Store(now.UnixNano())
	ps.m[key] = p
	return p
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
		p.closeIdle()
	}
}
