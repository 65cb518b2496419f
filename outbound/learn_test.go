package outbound

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestServerFirstTTL(t *testing.T) {
	now := time.Unix(1000, 0)
	s := NewServerFirst(10, time.Minute, nil)
	s.now = func() time.Time { return now }
	s.Learn("nats:4222")
	if !s.Known("nats:4222") {
		t.Fatal("just learned, not known")
	}
	now = now.Add(59 * time.Second)
	if !s.Known("nats:4222") {
		t.Fatal("forgotten before the TTL")
	}
	s.Learn("nats:4222") // seen again: the TTL restarts
	now = now.Add(59 * time.Second)
	if !s.Known("nats:4222") {
		t.Fatal("a refreshed entry expired at the old time")
	}
	now = now.Add(2 * time.Second)
	if s.Known("nats:4222") {
		t.Fatal("known after the TTL")
	}
	if s.Len() != 0 {
		t.Fatalf("Len = %d after expiry, want 0", s.Len())
	}
}

func TestServerFirstBound(t *testing.T) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	s := NewServerFirst(3, time.Hour, g)
	for _, k := range []string{"a", "b", "c"} {
		s.Learn(k)
	}
	s.Known("a") // a lookup does not refresh recency; learning does
	s.Learn("a")
	s.Learn("d") // pushes out the least recently learned: b
	for k, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true} {
		if got := s.Known(k); got != want {
			t.Errorf("Known(%q) = %v, want %v", k, got, want)
		}
	}
	if got := testutil.ToFloat64(g); got != 3 {
		t.Errorf("gauge = %v, want 3", got)
	}
}

func TestServerFirstConcurrent(t *testing.T) {
	s := NewServerFirst(64, time.Hour, nil)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 1000 {
				k := fmt.Sprintf("10.0.%d.%d:4222", i, j%100)
				s.Learn(k)
				s.Known(k)
			}
		})
	}
	wg.Wait()
	if s.Len() > 64 {
		t.Fatalf("Len = %d, over the bound of 64", s.Len())
	}
}

func TestServerFirstNil(t *testing.T) {
	var s *ServerFirst
	s.Learn("x")
	if s.Known("x") {
		t.Fatal("nil cache knows things")
	}
}
