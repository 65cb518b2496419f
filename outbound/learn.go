package outbound

import (
	"container/list"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ServerFirst remembers destinations whose server speaks first (SMTP, MySQL,
// NATS, ...) so that later connections to them skip detection, which would
// otherwise wait for client bytes that never come before the greeting. It is
// a bounded LRU with a TTL: a destination that changes protocol is forgotten
// within the TTL, and a scan of many destinations cannot grow it without
// bound. The zero value is not usable; use NewServerFirst. It is safe for
// concurrent use.
type ServerFirst struct {
	max   int
	ttl   time.Duration
	now   func() time.Time
	gauge prometheus.Gauge

	mu    sync.Mutex
	lru   *list.List // of *learned, most recent first
	index map[string]*list.Element
}

type learned struct {
	key     string
	expires time.Time
}

// NewServerFirst returns a cache holding at most max destinations, each for
// ttl after it was last seen speaking first. gauge, if not nil, tracks the
// number of destinations held.
func NewServerFirst(max int, ttl time.Duration, gauge prometheus.Gauge) *ServerFirst {
	return &ServerFirst{max: max, ttl: ttl, now: time.Now, gauge: gauge, lru: list.New(), index: map[string]*list.Element{}}
}

// Learn records that the server at key spoke first.
func (s *ServerFirst) Learn(key string) {
	if s == nil || s.max <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	expires := s.now().Add(s.ttl)
	if e, ok := s.index[key]; ok {
		e.Value.(*learned).expires = expires
		s.lru.MoveToFront(e)
		return
	}
	s.index[key] = s.lru.PushFront(&learned{key: key, expires: expires})
	for s.lru.Len() > s.max {
		s.remove(s.lru.Back())
	}
	s.setGauge()
}

// Known reports whether key was learned as server-first and has not
// expired.
func (s *ServerFirst) Known(key string) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.index[key]
	if !ok {
		return false
	}
	if s.now().After(e.Value.(*learned).expires) {
		s.remove(e)
		s.setGauge()
		return false
	}
	return true
}

// Len returns the number of destinations held, expired ones included until
// they are next looked up or pushed out.
func (s *ServerFirst) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lru.Len()
}

func (s *ServerFirst) remove(e *list.Element) {
	s.lru.Remove(e)
	delete(s.index, e.Value.(*learned).key)
}

func (s *ServerFirst) setGauge() {
	if s.gauge != nil {
		s.gauge.Set(float64(s.lru.Len()))
	}
}
