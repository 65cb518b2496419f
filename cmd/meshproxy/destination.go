//go:build !sidecar

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"

	"github.com/seed722d2a70/meshproxy/admin"
	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/destination/controller"
	"github.com/seed722d2a70/meshproxy/ports"
	"github.com/seed722d2a70/meshproxy/proxy"
)

// DefaultDestinationPort is where the destination controller serves the
// destination API (Linkerd's destination service uses the same port).
const DefaultDestinationPort = 8086

func runDestination(ctx context.Context, env environment, args []string) error {
	fs := flag.NewFlagSet("meshproxy destination", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	addr := fs.String("addr", fmt.Sprintf(":%d", DefaultDestinationPort), "where to serve the destination API (gRPC over mTLS)")
	adminAddr := fs.String("admin-addr", ":9996", "admin server: /live, /ready (informers synced, identity held), /metrics")
	kubeconfig := fs.String("kubeconfig", env.getenv("KUBECONFIG"), "kubeconfig file; empty: the in-cluster service account")
	trustDomain := fs.String("trust-domain", "", "trust domain of the workloads' SPIFFE IDs (default: the controller's own)")
	clusterDomain := fs.String("cluster-domain", controller.DefaultClusterDomain, "DNS domain of Service names")
	opaque := fs.String("opaque-ports", config.DefaultOpaquePorts, "ports opaque where no annotation says otherwise ('none' for none)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "json", "json or console")
	var id config.Identity
	fs.StringVar(&id.SPIFFESocket, "spiffe-socket", env.getenv("SPIFFE_ENDPOINT_SOCKET"), "SPIFFE Workload API socket of the controller's own SVID")
	fs.StringVar(&id.CertFile, "cert-file", "", "the controller's SVID as PEM files, instead of the Workload API")
	fs.StringVar(&id.KeyFile, "key-file", "", "private key of -cert-file")
	fs.StringVar(&id.BundleFile, "bundle-file", "", "trust bundle for -cert-file")
	fs.StringVar(&id.CADir, "ca-dir", "", "dev CA directory (meshproxy ca init), when neither a socket nor files are given")
	fs.StringVar(&id.TrustDomain, "dev-trust-domain", "mesh.local", "trust domain of the dev CA")
	fs.StringVar(&id.ID, "dev-id", "", "SPIFFE ID the dev CA issues the controller (default spiffe://<td>/meshproxy-destination)")
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	defaults, err := ports.Parse(*opaque)
	if err != nil {
		return fmt.Errorf("-opaque-ports: %w", err)
	}
	if id.ID == "" && id.SPIFFESocket == "" && id.CertFile == "" {
		id.ID = "spiffe://" + id.TrustDomain + "/meshproxy-destination"
	}
	id.SVIDTTL = time.Hour
	log, level, err := newLogger(config.Log{Level: *logLevel, Format: *logFormat}, env.stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	restCfg, err := kubeRESTConfig(*kubeconfig, "meshproxy-destination")
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	meta, err := metadata.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	src, err := proxy.NewIdentitySource(ctx, id, log, reg)
	if err != nil {
		return err
	}
	defer src.Close()

	// The admin server answers before the identity and the informers are
	// there, so probes see "not ready" rather than nothing.
	var ctrl atomic.Pointer[controller.Controller]
	ready := func() bool { c := ctrl.Load(); return src.Ready() && c != nil && c.Ready() }
	adminLn, err := net.Listen("tcp", *adminAddr)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	adminSrv := &http.Server{
		Handler:           admin.NewHandler(admin.Options{Gatherer: reg, Ready: ready, Level: level, Shutdown: cancel}),
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
	}
	go func() { _ = adminSrv.Serve(adminLn) }()
	defer adminSrv.Close()
	log.Info("admin server listening", zap.Stringer("addr", adminLn.Addr()))

	if err := src.WaitReady(ctx); err != nil {
		return fmt.Errorf("waiting for the controller's identity: %w", err)
	}
	svid, err := src.GetX509SVID()
	if err != nil {
		return err
	}
	td := svid.ID.TrustDomain()
	if *trustDomain == "" {
		*trustDomain = td.Name()
	}
	m, err := controller.NewMetrics(reg)
	if err != nil {
		return err
	}
	c, err := controller.New(controller.Config{
		Client: client, Metadata: meta, TrustDomain: *trustDomain, ClusterDomain: *clusterDomain,
		DefaultOpaque: defaults, Metrics: m, Log: log,
	})
	if err != nil {
		return err
	}
	ctrl.Store(c)

	srv, err := controller.NewGRPCServer(c, src)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("destination listener: %w", err)
	}
	log.Info("destination controller starting", zap.String("version", version), zap.Stringer("addr", ln.Addr()),
		zap.Stringer("admin_addr", adminLn.Addr()), zap.String("spiffe_id", svid.ID.String()),
		zap.String("workload_trust_domain", *trustDomain))

	errc := make(chan error, 2)
	go func() { errc <- c.Run(ctx) }()
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	// Cancelling ends the controller's Run, which ends every stream with
	// Unavailable, so the proxies reconnect (to a replica, or to this one
	// restarted) rather than wait; GracefulStop then has nothing to wait
	// for but the last sends.
	cancel()
	srv.GracefulStop()
	log.Info("destination controller stopped")
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}
