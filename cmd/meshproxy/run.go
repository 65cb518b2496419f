package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/admin"
	"github.com/seed722d2a70/meshproxy/config"
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

	// /shutdown and signals end the same context.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	adminLn, err := net.Listen("tcp", cfg.Admin.Addr)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	adminSrv := &http.Server{
		Handler: admin.NewHandler(admin.Options{
			Gatherer: reg,
			Ready:    func() bool { return ctx.Err() == nil },
			Level:    level,
			Shutdown: cancel,
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		if err := adminSrv.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin server failed", zap.Error(err))
			cancel()
		}
	}()
	log.Info("meshproxy started", zap.String("version", version), zap.String("admin_addr", adminLn.Addr().String()))

	<-ctx.Done()
	log.Info("shutting down", zap.Duration("grace", cfg.ShutdownGrace))
	shutdownCtx, done := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer done()
	return adminSrv.Shutdown(shutdownCtx)
}
