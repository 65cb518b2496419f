package bench

import (
	"context"
	"time"
)

// measureConnRate opens new connections to the echo app from workers
// callers for d, each connection exchanging one 64-byte message and
// closing, and reports connections per second and the p99 of connect plus
// exchange in microseconds. Through a pair of proxies every connection
// costs an mTLS handshake between them (resumed where the contender
// resumes sessions).
func measureConnRate(ctx context.Context, inst *Instance, workers int, d time.Duration) (map[string]float64, error) {
	rate, h, err := closedLoop(workers, d, func(int) func() error {
		out := make([]byte, pingPongSize)
		in := make([]byte, pingPongSize)
		return func() error {
			c, done, err := dial(ctx, inst.Front.Echo)
			if err != nil {
				return err
			}
			defer done()
			return roundTrip(c, out, in)
		}
	})
	if err != nil {
		return nil, err
	}
	return map[string]float64{
		"conns":  rate,
		"p99_us": float64(h.ValueAtQuantile(99)),
	}, nil
}
