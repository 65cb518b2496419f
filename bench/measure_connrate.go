package bench

import (
	"context"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// measureConnRate opens new connections to the echo app from workers
// callers for d, each connection exchanging one 64-byte message and
// closing, and reports connections per second and the p99 of connect plus
// exchange in microseconds. Through a pair of proxies every connection
// costs an mTLS handshake between them (resumed where the contender
// resumes sessions).
func measureConnRate(ctx context.Context, inst *Instance, workers int, d time.Duration) (map[string]float64, error) {
	hs := make([]*hdrhistogram.Histogram, workers)
	errs := make([]error, workers)
	counts := make([]int, workers)
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for i := range workers {
		hs[i] = newLatencyHistogram()
		wg.Go(func() {
			out := make([]byte, pingPongSize)
			in := make([]byte, pingPongSize)
			for time.Now().Before(end) {
				t := time.Now()
				c, done, err := dial(ctx, inst.Front.Echo)
				if err != nil {
					errs[i] = err
					return
				}
				err = roundTrip(c, out, in)
				done()
				if err != nil {
					errs[i] = err
					return
				}
				_ = hs[i].RecordValue(micros(time.Since(t)))
				counts[i]++
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	total := 0
	for i := range workers {
		if errs[i] != nil {
			return nil, errs[i]
		}
		total += counts[i]
	}
	h := mergeHistograms(hs)
	return map[string]float64{
		"conns":  float64(total) / elapsed.Seconds(),
		"p99_us": float64(h.ValueAtQuantile(99)),
	}, nil
}
