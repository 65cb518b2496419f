package bench

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Options are the sizes and durations of a run. DefaultOptions is the full
// run; Quick scales it down to a smoke run of the tooling.
type Options struct {
	Meshproxy string // the meshproxy binary to measure
	Self      string // this program, re-run for the apps and go-tls
	Dir       string // scratch directory for certificates, configurations and logs

	Contenders []string // which to run, in table order; default AllContenders
	// Measures, when set, runs only the tables with these names or name
	// prefixes ("http" selects http-1000 and http-4000).
	Measures []string
	Repeat   int // repetitions of every measure

	BulkBytes     int64 // bytes per bulk run, split evenly over its streams
	BulkStreams   []int
	PingPongConns int
	PingPongTime  time.Duration
	HTTPRates     []float64 // requests per second
	HTTPConns     int
	HTTPTime      time.Duration
	GRPCCallers   int
	GRPCTime      time.Duration
	ConnWorkers   int
	ConnTime      time.Duration
	IdleConns     int // connections held open by the memory measure
	IdleWorkers   int

	// MaxTime bounds the whole run: measures still to run when it passes
	// are left out, and the report says so.
	MaxTime time.Duration

	// Smoke marks the report as a check of the tooling, not a result.
	Smoke bool
	// Progress receives a line per measurement; nil discards them.
	Progress io.Writer
}

// DefaultOptions is the full run the issue asks for, sized to finish in
// about ten minutes on two cores.
func DefaultOptions() Options {
	return Options{
		Contenders:    AllContenders(),
		Repeat:        3,
		BulkBytes:     1 << 30,
		BulkStreams:   []int{1, 8},
		PingPongConns: 50,
		PingPongTime:  5 * time.Second,
		HTTPRates:     []float64{1000, 4000},
		HTTPConns:     50,
		HTTPTime:      6 * time.Second,
		GRPCCallers:   50,
		GRPCTime:      5 * time.Second,
		ConnWorkers:   16,
		ConnTime:      5 * time.Second,
		IdleConns:     10000,
		IdleWorkers:   50,
		MaxTime:       14 * time.Minute,
	}
}

// Quick scales o down to a smoke run of a few seconds per contender: it
// checks that every contender and measure works, nothing more.
func (o *Options) Quick() {
	o.Smoke = true
	o.Repeat = 1
	o.BulkBytes = 32 << 20
	o.PingPongTime = 500 * time.Millisecond
	o.HTTPTime = 500 * time.Millisecond
	o.GRPCTime = 500 * time.Millisecond
	o.ConnTime = 500 * time.Millisecond
	o.IdleConns = 200
}

// Validate reports options a run cannot use.
func (o *Options) Validate() error {
	switch {
	case o.Meshproxy == "" || o.Self == "" || o.Dir == "":
		return fmt.Errorf("bench: Meshproxy, Self and Dir are required")
	case o.MaxTime <= 0:
		return fmt.Errorf("bench: MaxTime must be positive")
	case o.Repeat < 1:
		return fmt.Errorf("bench: repeat %d, want at least 1", o.Repeat)
	case o.BulkBytes < 1<<20:
		return fmt.Errorf("bench: bulk size %d, want at least 1 MiB", o.BulkBytes)
	case o.PingPongConns < 1 || o.HTTPConns < 1 || o.GRPCCallers < 1 || o.ConnWorkers < 1 || o.IdleWorkers < 1:
		return fmt.Errorf("bench: connection and worker counts must be positive")
	}
	for _, s := range o.BulkStreams {
		if s < 1 {
			return fmt.Errorf("bench: bulk streams %d, want at least 1", s)
		}
	}
	known := map[string]bool{}
	for _, c := range AllContenders() {
		known[c] = true
	}
	for _, c := range o.Contenders {
		if !known[c] {
			return fmt.Errorf("bench: unknown contender %q (want one of %s)", c, strings.Join(AllContenders(), ", "))
		}
	}
	return nil
}

// settings describes o for the report.
func (o *Options) settings() map[string]string {
	rates := make([]string, len(o.HTTPRates))
	for i, r := range o.HTTPRates {
		rates[i] = fmt.Sprintf("%.0f", r)
	}
	return map[string]string{
		"repetitions": fmt.Sprintf("%d per measure and contender, contenders interleaved", o.Repeat),
		"bulk":        fmt.Sprintf("%d MiB per run, split over the run's streams %v", o.BulkBytes>>20, o.BulkStreams),
		"ping-pong":   fmt.Sprintf("%d connections, %d-byte messages, %s", o.PingPongConns, pingPongSize, o.PingPongTime),
		"http":        fmt.Sprintf("%s rps over %d keep-alive connections, %s per rate after %s unrecorded, fixed schedule", strings.Join(rates, " and "), o.HTTPConns, o.HTTPTime, min(httpWarmup, o.HTTPTime)),
		"grpc":        fmt.Sprintf("%d concurrent unary callers on one connection, %d-byte messages, %s", o.GRPCCallers, grpcPayloadSize, o.GRPCTime),
		"new conns":   fmt.Sprintf("%d workers, %s", o.ConnWorkers, o.ConnTime),
		"memory":      fmt.Sprintf("%d idle connections through a fresh instance", o.IdleConns),
	}
}
