package bench

import (
	"fmt"
	"syscall"
	"time"
)

// Schedule is the fixed-rate send plan of one connection in an open-loop
// test: send k is due at Start + Offset + k*Interval whatever happened to
// the sends before it. Latency is measured from that intended time, not from
// when the send actually happened, so a stall that delays later sends is
// counted against every request it delayed (no coordinated omission).
type Schedule struct {
	Start    time.Time
	Offset   time.Duration
	Interval time.Duration
}

// At is the intended time of send k.
func (s Schedule) At(k int) time.Time {
	return s.Start.Add(s.Offset + time.Duration(k)*s.Interval)
}

// Count is how many sends fall in [Start, Start+d).
func (s Schedule) Count(d time.Duration) int {
	if d <= s.Offset {
		return 0
	}
	return int((d - s.Offset + s.Interval - 1) / s.Interval)
}

// Schedules spreads rate requests per second over conns connections: each
// connection sends at rate/conns, and connection i is offset by i/rate, so
// that together they send evenly spaced requests at the full rate.
func Schedules(start time.Time, rate float64, conns int) ([]Schedule, error) {
	if rate <= 0 || conns <= 0 {
		return nil, fmt.Errorf("schedule: rate %v and connections %d must be positive", rate, conns)
	}
	step := time.Duration(float64(time.Second) / rate)
	if step <= 0 {
		return nil, fmt.Errorf("schedule: rate %v is too high", rate)
	}
	out := make([]Schedule, conns)
	for i := range out {
		out[i] = Schedule{Start: start, Offset: time.Duration(i) * step, Interval: step * time.Duration(conns)}
	}
	return out, nil
}

// sleepUntil sleeps until t. It calls nanosleep(2) directly rather than
// time.Sleep: the Go runtime's timers wake up to a millisecond late on some
// kernels (measured ~0.75 ms here against ~0.08 ms for nanosleep), which
// would add a constant to every latency of a fixed-rate schedule and hide
// what the proxies add. The goroutine holds its thread while it sleeps.
func sleepUntil(t time.Time) {
	for {
		d := time.Until(t)
		if d <= 0 {
			return
		}
		ts := syscall.NsecToTimespec(int64(d))
		if err := syscall.Nanosleep(&ts, nil); err == nil {
			return
		}
		// EINTR: sleep what is left.
	}
}
