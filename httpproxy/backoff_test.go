package httpproxy

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// The backoff starts on failed connects, not on connects the proxy never
// attempted (outbound's handshake queue was full): those say nothing of
// the upstream, and backing off for them would fail every request that
// needs a new connection for a while after one burst.
func TestDialBackoffStartsOnlyOnAttemptedConnects(t *testing.T) {
	refused := errors.New("connection refused")
	for _, tc := range []struct {
		name    string
		err     error
		blocked bool
	}{
		{"connect failed", refused, true},
		{"connect failed, wrapped", fmt.Errorf("dial 10.0.0.1:4143: %w", refused), true},
		{"local limit", fmt.Errorf("queue full (%w)", ErrNotDialed), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newDialBackoff()
			now := time.Now()
			b.failed(tc.err, now)
			err := b.blocked(now)
			if (err != nil) != tc.blocked {
				t.Fatalf("after %v: blocked = %v, want %v", tc.err, err, tc.blocked)
			}
			if err != nil && (!errors.Is(err, ErrDialBackoff) || !errors.Is(err, tc.err)) {
				t.Errorf("backoff error %v does not wrap ErrDialBackoff and the connect's error", err)
			}
		})
	}
}
