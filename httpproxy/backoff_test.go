package httpproxy

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// The backoff starts after dialBackoffAfter failed connects in a row, not
// on connects the proxy never attempted (outbound's handshake queue was
// full): those say nothing of the upstream, and backing off for them would
// fail every request that needs a new connection for a while after one
// burst. A success in between starts the count again.
func TestDialBackoffStartsAfterFailedConnectsInARow(t *testing.T) {
	refused := errors.New("connection refused")
	local := fmt.Errorf("queue full (%w)", ErrNotDialed)
	for _, tc := range []struct {
		name    string
		errs    []error // nil: a successful connect
		blocked bool
	}{
		{"one failed connect", []error{refused}, false},
		{"failed connects in a row", []error{refused, refused, fmt.Errorf("dial: %w", refused)}, true},
		{"a success between", []error{refused, refused, nil, refused, refused}, false},
		{"local limits", []error{local, local, local, local}, false},
		{"local limits between", []error{refused, local, refused, local, refused}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newDialBackoff()
			now := time.Now()
			for _, err := range tc.errs {
				if err == nil {
					b.connected()
				} else {
					b.failed(err, now)
				}
			}
			err := b.blocked(now)
			if (err != nil) != tc.blocked {
				t.Fatalf("after %v: blocked = %v, want %v", tc.errs, err, tc.blocked)
			}
			if err != nil && (!errors.Is(err, ErrDialBackoff) || !errors.Is(err, refused)) {
				t.Errorf("backoff error %v does not wrap ErrDialBackoff and the connect's error", err)
			}
		})
	}
}
