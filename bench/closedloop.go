package bench

import (
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// closedLoop runs workers goroutines for d, each repeating the operation
// newOp(i) returns as soon as the previous one completes, and returns the
// operations completed per second and their latencies. The first error of
// any worker stops them all and ends the measure with that error.
func closedLoop(workers int, d time.Duration, newOp func(i int) func() error) (float64, *hdrhistogram.Histogram, error) {
	hs := make([]*hdrhistogram.Histogram, workers)
	errs := make([]error, workers)
	counts := make([]int, workers)
	var (
		wg     sync.WaitGroup
		failed atomic.Bool
	)
	start := time.Now()
	end := start.Add(d)
	for i := range workers {
		hs[i] = newLatencyHistogram()
		op := newOp(i)
		wg.Go(func() {
			for time.Now().Before(end) && !failed.Load() {
				t := time.Now()
				if err := op(); err != nil {
					errs[i] = err
					failed.Store(true)
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
			return 0, nil, errs[i]
		}
		total += counts[i]
	}
	return float64(total) / elapsed.Seconds(), mergeHistograms(hs), nil
}
