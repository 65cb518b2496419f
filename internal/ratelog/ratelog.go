// Package ratelog limits how often a recurring event is logged. Under a
// flood, one line per connection would cost more than the connection; one
// line a second, saying how many events it stands for, keeps the log
// readable and cheap while metrics keep the exact count.
package ratelog

import (
	"sync"
	"time"
)

// Limiter lets one event through per interval. The zero value lets every
// event through; use New.
type Limiter struct {
	every time.Duration

	mu         sync.Mutex
	next       time.Time
	suppressed int
}

// New returns a limiter letting one event through per every.
func New(every time.Duration) *Limiter { return &Limiter{every: every} }

// Allow reports whether the event happening at now should be logged and,
// when it should, how many events were held back since the last one that
// was.
func (l *Limiter) Allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Before(l.next) {
		l.suppressed++
		return false, 0
	}
	l.next = now.Add(l.every)
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// Keyed is a Limiter per key, for events of a few kinds (refusal reasons,
// say) where one kind's flood must not hide another's first line. Keys
// must come from a small fixed set: each one keeps a Limiter for good.
type Keyed struct {
	every time.Duration

	mu sync.Mutex
	m  map[string]*Limiter
}

// NewKeyed returns a Keyed letting one event of each key through per every.
func NewKeyed(every time.Duration) *Keyed {
	return &Keyed{every: every, m: map[string]*Limiter{}}
}

// Allow is Limiter.Allow for key's events.
func (k *Keyed) Allow(key string, now time.Time) (ok bool, suppressed int) {
	k.mu.Lock()
	l, found := k.m[key]
	if !found {
		l = New(k.every)
		k.m[key] = l
	}
	k.mu.Unlock()
	return l.Allow(now)
}
