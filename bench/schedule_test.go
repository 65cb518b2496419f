package bench

import (
	"slices"
	"testing"
	"time"
)

// The connections' schedules together must send evenly spaced requests at
// the full rate: that is what makes the offered load fixed.
func TestSchedulesSpreadTheRateEvenly(t *testing.T) {
	start := time.Unix(1000, 0)
	tests := []struct {
		rate  float64
		conns int
		d     time.Duration
	}{
		{1000, 50, time.Second},
		{4000, 50, 2 * time.Second},
		{10, 3, time.Second},
		{1, 1, 5 * time.Second},
	}
	for _, tt := range tests {
		scheds, err := Schedules(start, tt.rate, tt.conns)
		if err != nil {
			t.Fatal(err)
		}
		var all []time.Duration
		for _, s := range scheds {
			for k := range s.Count(tt.d) {
				all = append(all, s.At(k).Sub(start))
			}
		}
		want := int(tt.rate * tt.d.Seconds())
		if len(all) != want {
			t.Errorf("rate %v over %v: %d sends, want %d", tt.rate, tt.d, len(all), want)
			continue
		}
		slices.Sort(all)
		step := time.Duration(float64(time.Second) / tt.rate)
		for i, at := range all {
			if at != time.Duration(i)*step {
				t.Errorf("rate %v: send %d at %v, want %v", tt.rate, i, at, time.Duration(i)*step)
				break
			}
		}
	}
}

func TestScheduleCount(t *testing.T) {
	s := Schedule{Offset: 3 * time.Millisecond, Interval: 10 * time.Millisecond}
	tests := []struct {
		d    time.Duration
		want int
	}{
		{0, 0},
		{3 * time.Millisecond, 0},                     // the first send is due at the end: excluded
		{4 * time.Millisecond, 1},                     // 3
		{13 * time.Millisecond, 1},                    // 3 (13 excluded)
		{14 * time.Millisecond, 2},                    // 3, 13
		{time.Second, 100},                            // 3, 13, …, 993
		{time.Second + 3*time.Millisecond + 1, 101},   // … 1003
		{time.Second + 3*time.Millisecond - 1, 100},   // 1003 excluded
		{2*time.Second + 3*time.Millisecond + 1, 201}, // … 2003
		{-time.Second, 0},                             // nothing before the start
	}
	for _, tt := range tests {
		if got := s.Count(tt.d); got != tt.want {
			t.Errorf("Count(%v) = %d, want %d", tt.d, got, tt.want)
		}
		for k := range s.Count(tt.d) {
			if s.At(k).Sub(s.Start) >= tt.d {
				t.Errorf("Count(%v): send %d at %v is not before the end", tt.d, k, s.At(k).Sub(s.Start))
			}
		}
	}
}

func TestSchedulesRejectsBadInput(t *testing.T) {
	for _, tt := range []struct {
		rate  float64
		conns int
	}{{0, 1}, {-5, 1}, {100, 0}, {1e12, 1}} {
		if _, err := Schedules(time.Now(), tt.rate, tt.conns); err == nil {
			t.Errorf("Schedules(rate %v, conns %d): no error", tt.rate, tt.conns)
		}
	}
}

func TestSleepUntilReturnsAfterTheTime(t *testing.T) {
	at := time.Now().Add(2 * time.Millisecond)
	sleepUntil(at)
	if time.Now().Before(at) {
		t.Error("sleepUntil returned early")
	}
	sleepUntil(time.Now().Add(-time.Second)) // the past: returns at once
}
