package outbound

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/httpproxy"
)

// ErrHandshakeQueueTimeout: the dial timeout ran out while waiting for one
// of the destination's handshake slots. It is a timeout like any other
// (errors.Is context.DeadlineExceeded), so it is counted as one.
var ErrHandshakeQueueTimeout = fmt.Errorf("timed out waiting to handshake: %w (%w)", context.DeadlineExceeded, httpproxy.ErrNotDialed)

// ErrHandshakeQueueFull: the destination already had queueFactor times its
// cap of connections queued for a handshake slot, so a new one fails at
// once instead of holding a goroutine and the app's socket for the dial
// timeout.
var ErrHandshakeQueueFull = fmt.Errorf("too many connections waiting to handshake (%w)", httpproxy.ErrNotDialed)

// queueFactor bounds a destination's queue at this many times its cap of
// running handshakes.
const queueFactor = 4

// localQueueError reports whether err is the handshake queue's own, no
// endpoint's fault: the balancer must not mark the endpoint failed for it,
// and another endpoint's dial would only queue again.
func localQueueError(err error) bool {
	return errors.Is(err, ErrHandshakeQueueTimeout) || errors.Is(err, ErrHandshakeQueueFull)
}

// handshakeSlots lets at most max handshakes (connect, mTLS, transport
// header) run per destination address, and queues the rest in arrival
// order, at most queueFactor×max of them. An app opening connections in a tight loop then queues in the
// proxy instead of taking a file descriptor, a goroutine and a TLS state
// per attempt, and a peer's inbound proxy sees at most max pending
// connections from us, under its per-source cap.
type handshakeSlots struct {
	max     int
	metrics *Metrics

	mu    sync.Mutex
	dests map[string]*destSlots
}

// destSlots are one destination's running handshakes and its queue; the
// entry exists only while either is not empty.
type destSlots struct {
	running int
	waiting list.List // of chan struct{}, closed when handed a slot
}

func newHandshakeSlots(max int, m *Metrics) *handshakeSlots {
	if max <= 0 {
		max = config.DefaultMaxHandshakesPerDestination
	}
	return &handshakeSlots{max: max, metrics: m, dests: map[string]*destSlots{}}
}

// acquire waits for a handshake slot to dest until ctx is done, and returns
// the function that gives it back. A nil *handshakeSlots caps nothing.
func (h *handshakeSlots) acquire(ctx context.Context, dest string) (release func(), err error) {
	if h == nil {
		return func() {}, nil
	}
	h.metrics.pendingDelta(1)
	release = func() {
		h.release(dest)
		h.metrics.pendingDelta(-1)
	}
	h.mu.Lock()
	d := h.dests[dest]
	if d == nil {
		d = &destSlots{}
		h.dests[dest] = d
	}
	if d.running < h.max {
		d.running++
		h.mu.Unlock()
		return release, nil
	}
	if d.waiting.Len() >= queueFactor*h.max {
		h.mu.Unlock()
		h.metrics.pendingDelta(-1)
		h.metrics.connectionShed("handshake_queue_full")
		return nil, fmt.Errorf("%s: %w (%d running, %d queued)", dest, ErrHandshakeQueueFull, h.max, queueFactor*h.max)
	}
	ready := make(chan struct{})
	e := d.waiting.PushBack(ready)
	h.mu.Unlock()

	select {
	case <-ready:
		return release, nil
	case <-ctx.Done():
	}
	h.mu.Lock()
	select {
	case <-ready:
		// Handed a slot just as the wait ended: pass it on.
		h.mu.Unlock()
		h.release(dest)
	default:
		d.waiting.Remove(e)
		h.mu.Unlock()
	}
	h.metrics.pendingDelta(-1)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		h.metrics.connectionShed("handshake_queue_timeout")
		return nil, fmt.Errorf("%s: %w (%d running)", dest, ErrHandshakeQueueTimeout, h.max)
	}
	return nil, ctx.Err()
}

// release hands dest's slot to the longest waiter, or frees it.
func (h *handshakeSlots) release(dest string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.dests[dest]
	if e := d.waiting.Front(); e != nil {
		close(d.waiting.Remove(e).(chan struct{}))
		return
	}
	if d.running--; d.running == 0 {
		delete(h.dests, dest)
	}
}
