package main

import (
	"context"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/proxy"
)

func runProxy(ctx context.Context, env environment, args []string) error {
	cfg, err := config.Load("meshproxy run", args, env.getenv, env.stderr)
	if err != nil {
		return err
	}
	log, level, err := newLogger(cfg.Log, env.stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	ballast := newHeapBallast(env.getenv)
	defer runtime.KeepAlive(ballast)

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	p, err := proxy.New(cfg, proxy.Options{
		Log: log, Level: level, Registry: reg,
	})
	if err != nil {
		return err
	}
	log.Info("meshproxy starting", zap.String("version", version))
	return p.Run(ctx)
}

// heapBallast is the size of a buffer the proxy allocates and never
// touches, unless the operator tunes the GC (GOGC, GOMEMLIMIT). A proxy's
// live heap is a few MiB while it allocates per request and frame, so with
// the runtime's minimum heap goal of 4 MiB it collected several times a
// second under load, a fixed cost per cycle that bounded gRPC calls/s
// through the pair. Counted as live, the ballast raises the heap goal by
// twice its size, and collections become rarer for small heaps, where
// they cost most, and no different for large ones; its pages are never
// written, so it takes address space, not resident memory. This is what
// the Go team's runtime diagnostics notes describe web proxies doing
// (golang/go#57175); the runtime has no minimum heap setting.
const heapBallast = 8 << 20

// newHeapBallast returns the ballast the proxy keeps while it runs, or nil
// when the operator tunes the GC.
func newHeapBallast(getenv func(string) string) []byte {
	if getenv("GOGC") != "" || getenv("GOMEMLIMIT") != "" {
		return nil
	}
	return make([]byte, heapBallast)
}
