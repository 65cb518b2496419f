package metrics

import "sync"

// OtherValue is the label value LabelLimit gives values beyond its bound.
const OtherValue = "other"

// LabelLimit bounds the distinct values of one label. Every series lives
// as long as the process, so a label whose values the outside world chooses
// (a Host header, the destinations a pod dials) could otherwise grow the
// proxy's memory without end. The first Max values seen keep their own
// series; any later new value is counted under OtherValue.
type LabelLimit struct {
	max  int
	mu   sync.Mutex
	seen map[string]struct{}
}

// NewLabelLimit returns a limit of max distinct values.
func NewLabelLimit(max int) *LabelLimit {
	return &LabelLimit{max: max, seen: map[string]struct{}{}}
}

// Value returns v if it has its own series, or OtherValue.
func (l *LabelLimit) Value(v string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[v]; ok {
		return v
	}
	if len(l.seen) >= l.max {
		return OtherValue
	}
	l.seen[v] = struct{}{}
	return v
}
