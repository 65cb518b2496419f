package detect

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/seed722d2a70/meshproxy/internal/tcptest"
)

func TestMetricsCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	d := New(Config{Timeout: 30 * time.Millisecond, Direction: Outbound, Metrics: m})
	for _, tc := range []struct {
		sent  string
		close bool
	}{
		{"GET / HTTP/1.1\r\n", false},
		{"GET / HTTP/1.0\r\n", false},
		{http2Preface, false},
		{"\x00", false},
		{"", true},  // empty
		{"", false}, // timeout
	} {
		client, server := tcptest.Pair(t)
		client.Write([]byte(tc.sent))
		if tc.close {
			client.CloseWrite()
		}
		if _, _, err := d.Detect(context.Background(), server); err != nil {
			t.Fatal(err)
		}
	}
	for result, want := range map[Outcome]float64{
		OutcomeHTTP1: 2, OutcomeHTTP2: 1, OutcomeOpaque: 1, OutcomeEmpty: 1, OutcomeTimeout: 1,
	} {
		if got := testutil.ToFloat64(m.total.WithLabelValues(Outbound, string(result))); got != want {
			t.Errorf("protocol_detect_total{direction=outbound,result=%s} = %v, want %v", result, got, want)
		}
	}
	if got := testutil.ToFloat64(m.total.WithLabelValues(Inbound, string(OutcomeHTTP1))); got != 0 {
		t.Errorf("inbound counted %v", got)
	}

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var count uint64
	var timeoutBucketOK bool
	for _, f := range families {
		if f.GetName() != "protocol_detect_duration_ms" {
			continue
		}
		for _, metric := range f.GetMetric() {
			h := metric.GetHistogram()
			count += h.GetSampleCount()
			// The timed-out detection took at least 30 ms.
			for _, b := range h.GetBucket() {
				if b.GetUpperBound() == 25 && b.GetCumulativeCount() < h.GetSampleCount() {
					timeoutBucketOK = true
				}
			}
		}
	}
	if count != 6 {
		t.Errorf("protocol_detect_duration_ms has %d samples, want 6", count)
	}
	if !timeoutBucketOK {
		t.Error("the timed-out detection is not above the 25 ms bucket")
	}
}

func TestMetricsSeriesExistAtStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	New(Config{Direction: Inbound, Metrics: m})
	if n := testutil.CollectAndCount(m.total); n != numKnownOutcomes {
		t.Errorf("%d counter series before any detection, want %d", n, numKnownOutcomes)
	}
}

func TestMetricsObserve(t *testing.T) {
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Observe(Outbound, "learned", time.Millisecond)
	if got := testutil.ToFloat64(m.total.WithLabelValues(Outbound, "learned")); got != 1 {
		t.Errorf("learned = %v, want 1", got)
	}
	// An outcome Detect does not produce still reaches the counters through
	// a direction's resolved series.
	m.forDirection(Outbound).observe("server_first", time.Millisecond)
	if got := testutil.ToFloat64(m.total.WithLabelValues(Outbound, "server_first")); got != 1 {
		t.Errorf("server_first = %v, want 1", got)
	}

	var nilMetrics *Metrics
	nilMetrics.Observe(Inbound, OutcomeHTTP1, time.Millisecond) // must not panic
	nilMetrics.forDirection(Inbound).observe(OutcomeHTTP1, time.Millisecond)
}

func TestNewMetricsRegisterTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("registering the metrics twice succeeded")
	}
}
