package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// After dialBackoffAfter failed connects in a row a pool waits before it
// connects again: dialBackoffMin, doubled per further failure up to
// dialBackoffMax, less up to half (jitter). Requests or streams that need
// a new connection meanwhile fail at once, as the connect would, without
// dialing. The first failures start no wait: one refused connect (an
// unmeshed address in front of several servers, one of them down; an app
// restarting) must not fail every request that needs a connection for
// the length of a wait.
const (
	dialBackoffAfter = 3
	dialBackoffMin   = 100 * time.Millisecond
	dialBackoffMax   = 2 * time.Second
)

// ErrDialBackoff marks the failure of a request or stream that needed a
// new upstream connection while its pool waits after failed connects; it
// wraps the last connect's error, so it is answered and retried elsewhere
// (a balanced endpoint's) as that error would be.
var ErrDialBackoff = errors.New("not connecting again yet after failed connects")

// ErrNotDialed marks a connect that failed before it reached the upstream,
// on a limit of the proxy's own (outbound's handshake queue): it says
// nothing of the upstream, so it starts no backoff. Dial functions wrap it.
var ErrNotDialed = errors.New("connect not attempted")

// dialBackoff is a pool's wait after failed connects, shared by the HTTP/1
// and HTTP/2 pools. Its pool's mutex guards it; tests shorten or stretch
// backoff and maxBackoff.
type dialBackoff struct {
	backoff, maxBackoff time.Duration
	// failures counts the failed connects in a row; until retryAt, new
	// connections are not dialed and fail with backoffErr.
	failures   int
	retryAt    time.Time
	backoffErr error
}

func newDialBackoff() dialBackoff {
	return dialBackoff{backoff: dialBackoffMin, maxBackoff: dialBackoffMax}
}

// blocked returns the error a connect fails with now, during the wait
// after failed connects; nil if it may dial.
func (b *dialBackoff) blocked(now time.Time) error {
	if b.failures >= dialBackoffAfter && now.Before(b.retryAt) {
		return b.backoffErr
	}
	return nil
}

// failed starts or lengthens the wait after a connect that failed with
// err. One failing during the wait started before it (the HTTP/1 pool
// dials for many requests at once) does not lengthen it, and one that
// never reached the upstream (ErrNotDialed) does not start it.
func (b *dialBackoff) failed(err error, now time.Time) {
	if b.blocked(now) != nil || errors.Is(err, ErrNotDialed) {
		return
	}
	b.failures++
	if b.failures < dialBackoffAfter {
		return
	}
	wait := b.maxBackoff
	if k := b.failures - dialBackoffAfter; k < 32 {
		wait = min(wait, b.backoff<<k)
	}
	wait -= rand.N(wait/2 + 1) // apart, pools that failed together
	b.retryAt = now.Add(wait)
	b.backoffErr = fmt.Errorf("%w (for %v): %w", ErrDialBackoff, wait.Round(time.Millisecond), err)
}

// connected ends the wait: a connect succeeded.
func (b *dialBackoff) connected() { b.failures = 0 }

// errPoolClosed ends the dials of a pool whose idle connections were
// closed (shutdown, Pools dropping the pool).
var errPoolClosed = errors.New("upstream pool closed while connecting")

// dialScope is the context of a pool's dials under way, shared by the
// HTTP/1 and HTTP/2 pools: dials outlive the requests they start for, not
// the pool's use, so closing its idle connections ends them. Its pool's
// mutex guards it.
type dialScope struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// context returns the context for a new dial.
func (d *dialScope) context() context.Context {
	if d.ctx == nil {
		d.ctx, d.cancel = context.WithCancelCause(context.Background())
	}
	return d.ctx
}

// end ends the dials under way with errPoolClosed; later ones get a new
// context.
func (d *dialScope) end() {
	if d.cancel != nil {
		d.cancel(errPoolClosed)
		d.ctx, d.cancel = nil, nil
	}
}
