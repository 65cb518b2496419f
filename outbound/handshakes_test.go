package outbound

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/seed722d2a70/meshproxy/httpproxy"
)

func TestHandshakeSlots(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	h := newHandshakeSlots(2, m)
	ctx := t.Context()
	r1, err := h.acquire(ctx, "a:4143")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := h.acquire(ctx, "a:4143")
	if err != nil {
		t.Fatal(err)
	}
	// Another destination has slots of its own.
	rb, err := h.acquire(ctx, "b:4143")
	if err != nil {
		t.Fatal(err)
	}
	rb()

	// The third to a queues, in order, until a slot is released.
	got := make(chan int, 2)
	releases := make(chan func(), 2)
	for i := range 2 {
		go func() {
			r, err := h.acquire(ctx, "a:4143")
			if err != nil {
				t.Error(err)
				return
			}
			got <- i
			releases <- r
		}()
		waitFor(t, func() bool { h.mu.Lock(); defer h.mu.Unlock(); return h.dests["a:4143"].waiting.Len() == i+1 })
	}
	if n := testutil.ToFloat64(m.pending); n != 4 {
		t.Errorf("outbound_pending_connections = %v with 2 running and 2 queued, want 4", n)
	}
	select {
	case i := <-got:
		t.Fatalf("waiter %d got a slot while both were taken", i)
	case <-time.After(50 * time.Millisecond):
	}
	r1()
	if i := <-got; i != 0 {
		t.Errorf("waiter %d served first, want 0", i)
	}
	r2()
	if i := <-got; i != 1 {
		t.Errorf("waiter %d served second, want 1", i)
	}

	// A waiter whose dial timeout runs out fails like a dial timeout,
	// counted, and leaves the queue.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := h.acquire(short, "a:4143"); !errors.Is(err, ErrHandshakeQueueTimeout) || !errors.Is(err, context.DeadlineExceeded) ||
		!errors.Is(err, httpproxy.ErrNotDialed) {
		t.Errorf("queued past the dial timeout: %v, want ErrHandshakeQueueTimeout (a deadline)", err)
	}
	if reason := connectErrorReason(ErrHandshakeQueueTimeout); reason != "timeout" {
		t.Errorf("connect error reason %q, want timeout", reason)
	}
	if n := testutil.ToFloat64(m.shed.WithLabelValues("handshake_queue_timeout")); n != 1 {
		t.Errorf("outbound_connections_shed_total{handshake_queue_timeout} = %v, want 1", n)
	}
	// A canceled waiter is not counted as shed.
	canceled, cancelNow := context.WithCancel(ctx)
	cancelNow()
	if _, err := h.acquire(canceled, "a:4143"); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled wait: %v", err)
	}

	(<-releases)()
	(<-releases)()
	h.mu.Lock()
	left := len(h.dests)
	h.mu.Unlock()
	if left != 0 {
		t.Errorf("%d destinations tracked after every release, want 0", left)
	}
	if n := testutil.ToFloat64(m.pending); n != 0 {
		t.Errorf("outbound_pending_connections = %v at the end, want 0", n)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met")
		}
		time.Sleep(time.Millisecond)
	}
}

// A destination's queue holds at most queueFactor times its cap; past it a
// connection fails at once, counted, rather than wait for the dial
// timeout.
func TestHandshakeQueueIsBounded(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	h := newHandshakeSlots(1, m)
	ctx, cancel := context.WithCancel(t.Context())
	release, err := h.acquire(ctx, "a:4143")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	waiters := make(chan error, queueFactor)
	for range queueFactor {
		go func() { _, err := h.acquire(ctx, "a:4143"); waiters <- err }()
	}
	waitFor(t, func() bool { h.mu.Lock(); defer h.mu.Unlock(); return h.dests["a:4143"].waiting.Len() == queueFactor })
	start := time.Now()
	_, err = h.acquire(ctx, "a:4143")
	if !errors.Is(err, ErrHandshakeQueueFull) || !errors.Is(err, httpproxy.ErrNotDialed) {
		t.Errorf("with %d queued: %v, want ErrHandshakeQueueFull (not dialed: no pool backoff)", queueFactor, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("failing took %v, want at once", d)
	}
	if n := testutil.ToFloat64(m.shed.WithLabelValues("handshake_queue_full")); n != 1 {
		t.Errorf("outbound_connections_shed_total{handshake_queue_full} = %v, want 1", n)
	}
	if reason := connectErrorReason(err); reason != "handshake_queue_full" {
		t.Errorf("connect error reason %q, want handshake_queue_full", reason)
	}
	cancel()
	for range queueFactor {
		<-waiters
	}
	if n := testutil.ToFloat64(m.pending); n != 1 {
		t.Errorf("outbound_pending_connections = %v with one running, want 1", n)
	}
}
