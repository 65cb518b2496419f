package balance

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// fakeClock is a settable time source.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newTestBalancer(ids ...string) (*Balancer, *fakeClock) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	b := New(DefaultDecay)
	b.now = clock.now
	b.Update(ids)
	return b, clock
}

func pickN(t *testing.T, b *Balancer, n int, rtt func(id string) time.Duration, clock *fakeClock) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		h, ok := b.Pick(nil)
		if !ok {
			t.Fatal("Pick found nothing")
		}
		got[h.ID()]++
		d := rtt(h.ID())
		clock.add(d + 500*time.Microsecond)
		h.Observe(d)
		h.Done()
	}
	return got
}

func TestEqualEndpointsShareTheLoad(t *testing.T) {
	// Equal latencies, with the noise measured on this machine: most
	// between 0.3 and 1 ms, one in ten up to 2.5 ms, one in fifty stalled
	// for 10 to 35 ms. Seeded, so a failure can be replayed.
	noise := rand.New(rand.NewPCG(1, 2))
	latency := func(string) time.Duration {
		switch r := noise.IntN(100); {
		case r < 2:
			return time.Duration(10+noise.IntN(25)) * time.Millisecond
		case r < 10:
			return time.Duration(1500+noise.IntN(1000)) * time.Microsecond
		}
		return time.Duration(300+noise.IntN(700)) * time.Microsecond
	}
	for run := range 20 {
		b, clock := newTestBalancer("a", "b", "c")
		got := pickN(t, b, 300, latency, clock)
		for _, id := range []string{"a", "b", "c"} {
			if got[id] < 45 {
				t.Errorf("run %d: endpoint %s got %d of 300 requests, want at least 15%%: %v", run, id, got[id], got)
			}
		}
	}
}

func TestSlowEndpointGetsLess(t *testing.T) {
	b, clock := newTestBalancer("fast", "slow")
	got := pickN(t, b, 1000, func(id string) time.Duration {
		if id == "slow" {
			return 50 * time.Millisecond
		}
		return time.Millisecond
	}, clock)
	if got["slow"] > 100 {
		t.Errorf("the 50× slower endpoint got %d of 1000 requests: %v", got["slow"], got)
	}
	if got["slow"] == 0 {
		t.Errorf("the slow endpoint was never retried as its estimate decayed: %v", got)
	}
}

func TestPeakRisesByStepsAndDecays(t *testing.T) {
	b, clock := newTestBalancer("a")
	h, _ := b.Pick(nil)
	var got []time.Duration
	for range 6 {
		h.Observe(20 * time.Millisecond)
		got = append(got, time.Duration(b.byID["a"].rtt))
	}
	want := []time.Duration{2, 4, 8, 16, 20, 20} // ms: doubling up to the level
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("estimates after repeated 20 ms observations: %v, want %v ms", got, want)
		}
	}
	clock.add(DefaultDecay)
	if e := b.estimate(b.byID["a"], clock.now()); e > 0.37*float64(20*time.Millisecond) || e < 0.36*float64(20*time.Millisecond) {
		t.Errorf("estimate after one time constant unused: %v, want 20 ms/e", time.Duration(e))
	}
}

func TestWorkInFlightSpreads(t *testing.T) {
	b, _ := newTestBalancer("a", "b")
	// Long-lived connections, never done: each new one goes where fewer are.
	got := map[string]int{}
	for range 100 {
		h, _ := b.Pick(nil)
		got[h.ID()]++
	}
	if got["a"] != 50 || got["b"] != 50 {
		t.Errorf("100 open connections on equal endpoints: %v, want 50/50", got)
	}
}

func TestFailedEndpointsArePassedOver(t *testing.T) {
	b, clock := newTestBalancer("down", "up1", "up2")
	for {
		h, _ := b.Pick(nil)
		if h.ID() == "down" {
			h.Fail()
			h.Done()
			break
		}
		h.Done()
	}
	for range 100 {
		h, _ := b.Pick(nil)
		if h.ID() == "down" {
			t.Fatalf("picked the failed endpoint within its penalty")
		}
		h.Done()
	}
	clock.add(FailurePenalty)
	seen := false
	for range 100 {
		h, _ := b.Pick(nil)
		seen = seen || h.ID() == "down"
		h.Done()
	}
	if !seen {
		t.Errorf("the endpoint was not tried again after its penalty")
	}
}

func TestPickSkipsAndRunsOut(t *testing.T) {
	for _, tc := range []struct {
		ids    []string
		skip   map[string]bool
		failed []string
		want   string // "" for none
	}{
		{ids: nil, want: ""},
		{ids: []string{"a"}, skip: map[string]bool{"a": true}, want: ""},
		{ids: []string{"a", "b"}, skip: map[string]bool{"a": true}, want: "b"},
		// Every endpoint failing: still try one rather than none.
		{ids: []string{"a", "b"}, failed: []string{"a", "b"}, skip: map[string]bool{"a": true}, want: "b"},
	} {
		t.Run(fmt.Sprint(tc.ids, tc.skip, tc.failed), func(t *testing.T) {
			b, _ := newTestBalancer(tc.ids...)
			for _, id := range tc.failed {
				b.byID[id].failedUntil = b.now().Add(time.Hour)
			}
			h, ok := b.Pick(tc.skip)
			if tc.want == "" {
				if ok {
					t.Errorf("picked %s, want none", h.ID())
				}
				return
			}
			if !ok || h.ID() != tc.want {
				t.Errorf("picked %v, want %s", h, tc.want)
			}
		})
	}
}

func TestUpdateKeepsEstimatesAndWork(t *testing.T) {
	b, _ := newTestBalancer("a", "b")
	h, _ := b.Pick(map[string]bool{"b": true})
	h.Observe(time.Second)
	b.Update([]string{"a", "c", "a"})
	if b.Len() != 2 {
		t.Fatalf("Len = %d after an update with a duplicate, want 2", b.Len())
	}
	if e := b.byID["a"]; e.pending != 1 || e.rtt != float64(PeakStep*MinRTT) {
		t.Errorf("a lost its state: %+v", e)
	}
	h.Done()
	h.Done() // idempotent
	if e := b.byID["a"]; e.pending != 0 {
		t.Errorf("pending = %d after Done twice, want 0", e.pending)
	}
}

func BenchmarkPick(b *testing.B) {
	bal := New(0)
	ids := make([]string, 10)
	for i := range ids {
		ids[i] = fmt.Sprintf("10.1.0.%d:8080", i)
	}
	bal.Update(ids)
	b.ReportAllocs()
	for b.Loop() {
		h, _ := bal.Pick(nil)
		h.Observe(time.Millisecond)
		h.Done()
	}
}
