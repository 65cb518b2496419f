package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// httpRequest is the request every HTTP measure sends, on keep-alive
// connections.
const httpRequest = "GET / HTTP/1.1\r\nHost: " + meshHost + "\r\nUser-Agent: meshbench\r\n\r\n"

// httpConn is one keep-alive HTTP/1.1 connection driven by hand, so that
// the load generator adds as little as possible and never opens more
// connections than asked.
type httpConn struct {
	c  net.Conn
	br *bufio.Reader
}

func (h *httpConn) do() error {
	if _, err := io.WriteString(h.c, httpRequest); err != nil {
		return fmt.Errorf("http write: %w", err)
	}
	resp, err := http.ReadResponse(h.br, nil)
	if err != nil {
		return fmt.Errorf("http read: %w", err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("http body: %w", err)
	}
	if resp.StatusCode != http.StatusOK || n != int64(len(httpBody)) {
		return fmt.Errorf("http: status %d, %d body bytes", resp.StatusCode, n)
	}
	return nil
}

// httpWarmup is how long each HTTP measure runs its schedule before it
// records anything. A proxy that pools upstream connections (meshproxy's
// HTTP relay) makes them when requests first overlap, and a 6 s run would
// count those handshakes in its p99; the TCP tunnels made theirs when the
// load generator connected. Istio's published figures come from runs of
// minutes, where they are lost in the count.
const httpWarmup = time.Second

// measureHTTP sends rate requests per second for d over conns keep-alive
// connections, each on a fixed schedule (see Schedule), after sending one
// request on each connection in turn and then running the schedule for
// httpWarmup (or d, if shorter) unrecorded. It reports the latency from
// each request's intended send time: p50, p99 and p99.9 in microseconds,
// and the rate achieved.
func measureHTTP(ctx context.Context, inst *Instance, rate float64, conns int, d time.Duration) (map[string]float64, error) {
	hcs := make([]*httpConn, 0, conns)
	for range conns {
		c, done, err := dial(ctx, inst.Front.HTTP)
		if err != nil {
			return nil, err
		}
		defer done()
		hc := &httpConn{c: c, br: bufio.NewReader(c)}
		if err := hc.do(); err != nil { // warm the connection
			return nil, err
		}
		hcs = append(hcs, hc)
	}
	if _, _, err := runHTTPSchedule(hcs, rate, min(httpWarmup, d), nil); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	// The histograms (about 400 KiB each) are made before the schedule
	// starts: made as each sender started, they made the first senders
	// late, and their requests went out in a burst the measure counted.
	hs := make([]*hdrhistogram.Histogram, conns)
	for i := range hs {
		hs[i] = newLatencyHistogram()
	}
	total, elapsed, err := runHTTPSchedule(hcs, rate, d, hs)
	if err != nil {
		return nil, err
	}
	h := mergeHistograms(hs)
	return map[string]float64{
		"p50_us":   float64(h.ValueAtQuantile(50)),
		"p99_us":   float64(h.ValueAtQuantile(99)),
		"p999_us":  float64(h.ValueAtQuantile(99.9)),
		"achieved": float64(total) / elapsed.Seconds(),
	}, nil
}

// runHTTPSchedule sends rate requests per second for d over hcs, each on
// its fixed schedule, recording each request's latency from its intended
// send time in hs[i] when hs is not nil. It returns the requests sent and
// the time from the schedule's start to the last answer.
func runHTTPSchedule(hcs []*httpConn, rate float64, d time.Duration, hs []*hdrhistogram.Histogram) (int, time.Duration, error) {
	scheds, err := Schedules(time.Now().Add(50*time.Millisecond), rate, len(hcs))
	if err != nil {
		return 0, 0, err
	}
	errs := make([]error, len(hcs))
	counts := make([]int, len(hcs))
	var wg sync.WaitGroup
	for i, hc := range hcs {
		s := scheds[i]
		n := s.Count(d)
		wg.Go(func() {
			for k := range n {
				at := s.At(k)
				sleepUntil(at)
				if err := hc.do(); err != nil {
					errs[i] = err
					return
				}
				if hs != nil {
					_ = hs[i].RecordValue(micros(time.Since(at)))
				}
				counts[i]++
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(scheds[0].Start)
	total := 0
	for i := range hcs {
		if errs[i] != nil {
			return 0, 0, errs[i]
		}
		total += counts[i]
	}
	return total, elapsed, nil
}
