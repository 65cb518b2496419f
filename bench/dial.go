package bench

import (
	"context"
	"net"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// dialTimeout bounds one connection attempt of a measure.
const dialTimeout = 10 * time.Second

// dial connects to addr and closes the connection when ctx ends, so a
// measure blocked in Read or Write returns once its time is up.
func dial(ctx context.Context, addr string) (*net.TCPConn, func(), error) {
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	return c.(*net.TCPConn), func() { stop(); c.Close() }, nil
}

// newLatencyHistogram records microseconds from 1 µs to a minute with three
// significant digits.
func newLatencyHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
}

// micros is d in whole microseconds, at least 1 so it fits the histogram.
func micros(d time.Duration) int64 {
	return max(int64(d/time.Microsecond), 1)
}

// mergeHistograms adds hs together.
func mergeHistograms(hs []*hdrhistogram.Histogram) *hdrhistogram.Histogram {
	all := newLatencyHistogram()
	for _, h := range hs {
		all.Merge(h)
	}
	return all
}
