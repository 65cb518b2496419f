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

// measureHTTP sends rate requests per second for d over conns keep-alive
// connections, each on a fixed schedule (see Schedule), and reports the
// latency from each request's intended send time: p50, p99 and p99.9 in
// microseconds, and the rate achieved.
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
	scheds, err := Schedules(time.Now().Add(50*time.Millisecond), rate, conns)
	if err != nil {
		return nil, err
	}
	hs := make([]*hdrhistogram.Histogram, conns)
	errs := make([]error, conns)
	counts := make([]int, conns)
	var wg sync.WaitGroup
	for i, hc := range hcs {
		hs[i] = newLatencyHistogram()
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
				_ = hs[i].RecordValue(micros(time.Since(at)))
				counts[i]++
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(scheds[0].Start)
	total := 0
	for i := range hcs {
		if errs[i] != nil {
			return nil, errs[i]
		}
		total += counts[i]
	}
	h := mergeHistograms(hs)
	return map[string]float64{
		"p50_us":   float64(h.ValueAtQuantile(50)),
		"p99_us":   float64(h.ValueAtQuantile(99)),
		"p999_us":  float64(h.ValueAtQuantile(99.9)),
		"achieved": float64(total) / elapsed.Seconds(),
	}, nil
}
