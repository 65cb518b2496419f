package ratelog

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	l := New(time.Second)
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at             time.Duration
		ok             bool
		wantSuppressed int
	}{
		{0, true, 0},
		{100 * time.Millisecond, false, 0},
		{999 * time.Millisecond, false, 0},
		{time.Second, true, 2},
		{1500 * time.Millisecond, false, 0},
		{5 * time.Second, true, 1},
		{6 * time.Second, true, 0},
	}
	for _, s := range steps {
		ok, n := l.Allow(t0.Add(s.at))
		if ok != s.ok || n != s.wantSuppressed {
			t.Errorf("Allow at +%v = %v, %d; want %v, %d", s.at, ok, n, s.ok, s.wantSuppressed)
		}
	}
}

func TestKeyedLimitsEachKeyAlone(t *testing.T) {
	k := NewKeyed(time.Second)
	t0 := time.Unix(1000, 0)
	steps := []struct {
		key            string
		at             time.Duration
		ok             bool
		wantSuppressed int
	}{
		{"a", 0, true, 0},
		{"a", 10 * time.Millisecond, false, 0},
		{"b", 20 * time.Millisecond, true, 0}, // a's flood does not hide b
		{"a", 30 * time.Millisecond, false, 0},
		{"b", 40 * time.Millisecond, false, 0},
		{"a", time.Second, true, 2},
		{"b", time.Second, false, 0},
		{"b", 1020 * time.Millisecond, true, 2},
	}
	for _, s := range steps {
		ok, n := k.Allow(s.key, t0.Add(s.at))
		if ok != s.ok || n != s.wantSuppressed {
			t.Errorf("Allow(%q) at +%v = %v, %d; want %v, %d", s.key, s.at, ok, n, s.ok, s.wantSuppressed)
		}
	}
}
