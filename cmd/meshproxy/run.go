package main

import (
	"context"

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
