//go:build !sidecar

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/inject"
)

// injectFlags registers the flags shared by inject and injector and
// returns a function building the inject.Config from them.
func injectFlags(fs *flag.FlagSet) func() (inject.Config, error) {
	d := inject.DefaultConfig()
	image := fs.String("image", d.Image, "meshproxy image, for the proxy and the init container")
	pull := fs.String("image-pull-policy", string(d.ImagePullPolicy), "image pull policy: Always, IfNotPresent or Never")
	uid := fs.Int64("proxy-uid", d.ProxyUID, "user ID the proxy runs as, exempt from redirection")
	inPort := fs.Uint("inbound-port", uint(d.InboundPort), "proxy inbound port")
	outPort := fs.Uint("outbound-port", uint(d.OutboundPort), "proxy outbound port")
	adminPort := fs.Uint("admin-port", uint(d.AdminPort), "proxy admin port (probes, metrics)")
	sidecar := fs.String("sidecar", "native", "how the proxy runs: native (init container with restartPolicy Always, Kubernetes 1.29+) or container")
	logLevel := fs.String("proxy-log-level", d.LogLevel, "proxy log level when the pod does not set "+inject.AnnotationProxyLogLevel)
	meshedNets := fs.String("meshed-networks", strings.Join(d.MeshedNetworks, ","),
		"CIDRs of the cluster's pod networks, whose destinations the proxy takes to be meshed, when the pod does not set "+inject.AnnotationMeshedNetworks+" (empty: none)")
	destAddr := fs.String("destination-addr", d.DestinationAddr,
		"destination controller (host:port, e.g. meshproxy-destination.meshproxy.svc.cluster.local:8086) the proxies resolve Services with (empty: none)")
	destID := fs.String("destination-identity", d.DestinationIdentity,
		"the destination controller's SPIFFE ID, when not spiffe://TRUST-DOMAIN/ns/meshproxy/sa/meshproxy-destination")
	socket := fs.String("socket", string(d.Socket), "Workload API socket source: csi (SPIFFE CSI driver) or hostpath")
	csiDriver := fs.String("csi-driver", d.CSIDriver, "CSI driver serving the Workload API socket")
	hostDir := fs.String("host-socket-dir", d.HostSocketDir, "node directory holding the SPIRE agent socket, for -socket hostpath")
	sockDir := fs.String("socket-dir", d.SocketDir, "where the socket directory is mounted in the proxy container")
	sockFile := fs.String("socket-file", d.SocketFile, "socket file name in that directory")
	proxyResources := resourceFlags(fs, "proxy-", "proxy", "10m", "32Mi", "256Mi")
	return func() (inject.Config, error) {
		c := d
		c.Image, c.ImagePullPolicy, c.ProxyUID = *image, corev1.PullPolicy(*pull), *uid
		for _, p := range []struct {
			name string
			v    uint
			dst  *uint16
		}{{"inbound-port", *inPort, &c.InboundPort}, {"outbound-port", *outPort, &c.OutboundPort}, {"admin-port", *adminPort, &c.AdminPort}} {
			if p.v == 0 || p.v > 65535 {
				return c, fmt.Errorf("-%s %d is not a port", p.name, p.v)
			}
			*p.dst = uint16(p.v)
		}
		switch *sidecar {
		case "native":
			c.NativeSidecar = true
		case "container":
			c.NativeSidecar = false
		default:
			return c, fmt.Errorf("-sidecar %q: want native or container", *sidecar)
		}
		switch c.ImagePullPolicy {
		case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
		default:
			return c, fmt.Errorf("-image-pull-policy %q: want Always, IfNotPresent or Never", *pull)
		}
		c.LogLevel, c.Socket, c.CSIDriver = *logLevel, inject.SocketSource(*socket), *csiDriver
		nets, err := inject.ParseNetworks(*meshedNets)
		if err != nil {
			return c, fmt.Errorf("-meshed-networks: %w", err)
		}
		c.MeshedNetworks = nets
		c.DestinationAddr, c.DestinationIdentity = *destAddr, *destID
		c.HostSocketDir, c.SocketDir, c.SocketFile = *hostDir, *sockDir, *sockFile
		res, err := proxyResources()
		if err != nil {
			return c, err
		}
		c.ProxyResources = res
		return c, c.Validate()
	}
}

// resourceFlags registers -<prefix>cpu-request, -<prefix>memory-request and
// -<prefix>memory-limit (empty: none) and returns a function building the
// container resources from them.
func resourceFlags(fs *flag.FlagSet, prefix, what, cpu, mem, memLimit string) func() (corev1.ResourceRequirements, error) {
	cpuFlag := fs.String(prefix+"cpu-request", cpu, what+" CPU request")
	memFlag := fs.String(prefix+"memory-request", mem, what+" memory request")
	limitFlag := fs.String(prefix+"memory-limit", memLimit, what+" memory limit (empty: none)")
	return func() (corev1.ResourceRequirements, error) {
		res := corev1.ResourceRequirements{Requests: corev1.ResourceList{}}
		for _, q := range []struct {
			flag, v string
			list    *corev1.ResourceList
			name    corev1.ResourceName
		}{
			{"cpu-request", *cpuFlag, &res.Requests, corev1.ResourceCPU},
			{"memory-request", *memFlag, &res.Requests, corev1.ResourceMemory},
			{"memory-limit", *limitFlag, &res.Limits, corev1.ResourceMemory},
		} {
			if q.v == "" {
				continue
			}
			v, err := resource.ParseQuantity(q.v)
			if err != nil {
				return res, fmt.Errorf("-%s%s: %w", prefix, q.flag, err)
			}
			if *q.list == nil {
				*q.list = corev1.ResourceList{}
			}
			(*q.list)[q.name] = v
		}
		return res, nil
	}
}

// runInject injects the proxy into the workloads of YAML manifests.
func runInject(_ context.Context, env environment, args []string) error {
	fs := flag.NewFlagSet("meshproxy inject", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintln(env.stderr, "usage: meshproxy inject [flags] [file ...|-]\n\nWrites the manifests with the proxy injected into their workloads to stdout.\n\nflags:")
		fs.PrintDefaults()
	}
	buildConfig := injectFlags(fs)
	uninject := fs.Bool("uninject", false, "remove the proxy instead")
	dryRun := fs.Bool("dry-run", false, "print a diff of what would change instead of the manifests")
	enabledOnly := fs.Bool("enabled-only", false, "inject only workloads annotated "+inject.AnnotationInject+": "+inject.Enabled+" (or in such a namespace), as the webhook does")
	namespace := fs.String("namespace", "default", "namespace of objects that name none")
	quiet := fs.Bool("quiet", false, "do not list what was done on stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := buildConfig()
	if err != nil {
		return err
	}
	in, err := inject.New(cfg)
	if err != nil {
		return err
	}
	inputs, err := readInputs(fs.Args(), os.Stdin)
	if err != nil {
		return err
	}
	src := joinStreams(inputs)
	opts := inject.StreamOptions{Uninject: *uninject, Namespace: *namespace}
	if *enabledOnly {
		opts.Policy = inject.WhenEnabled
	}
	out, results, err := in.Stream(src, opts)
	if err != nil {
		return err
	}
	if !*quiet {
		for _, r := range results {
			line := r.Object + ": " + string(r.Action)
			if r.Reason != "" {
				line += " (" + r.Reason + ")"
			}
			fmt.Fprintln(env.stderr, line)
		}
	}
	if *dryRun {
		_, err = fmt.Fprint(env.stdout, inject.Diff("before", "after", src, out))
		return err
	}
	_, err = env.stdout.Write(out)
	return err
}

// runInjector serves the mutating admission webhook over TLS.
func runInjector(ctx context.Context, env environment, args []string) error {
	fs := flag.NewFlagSet("meshproxy injector", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	buildConfig := injectFlags(fs)
	addr := fs.String("addr", ":8443", "address to serve the webhook on (POST /inject), with /live and /metrics")
	certFile := fs.String("tls-cert", "", "PEM certificate chain file of the webhook (required; re-read when it changes)")
	keyFile := fs.String("tls-key", "", "PEM private key file of the webhook (required)")
	nsLookup := fs.String("namespace-lookup", "auto", "read namespace annotations from the Kubernetes API: auto (when in a cluster), on or off")
	logLevel := fs.String("log-level", "info", "log level of the injector")
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	if *certFile == "" || *keyFile == "" {
		return errors.New("-tls-cert and -tls-key are required")
	}
	cfg, err := buildConfig()
	if err != nil {
		return err
	}
	in, err := inject.New(cfg)
	if err != nil {
		return err
	}
	log, _, err := newLogger(config.Log{Level: *logLevel, Format: "json"}, env.stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	certs := &certReloader{certFile: *certFile, keyFile: *keyFile}
	if _, err := certs.get(nil); err != nil {
		return err
	}
	lookup, err := namespaceLookup(*nsLookup, env)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	m, err := inject.NewWebhookMetrics(reg)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/inject", inject.NewWebhook(in, inject.WebhookOptions{Log: log, Metrics: m, Namespaces: lookup}))
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("live\n")) })
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.get},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		ErrorLog:          zap.NewStdLog(log),
	}
	log.Info("injector listening", zap.String("addr", ln.Addr().String()), zap.Bool("namespace_lookup", lookup != nil))
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdownCtx)
	<-done
	log.Info("injector stopped")
	return err
}

// namespaceLookup builds the in-cluster namespace lookup for mode.
func namespaceLookup(mode string, env environment) (inject.NamespaceLookup, error) {
	const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	host, port := env.getenv("KUBERNETES_SERVICE_HOST"), env.getenv("KUBERNETES_SERVICE_PORT")
	switch mode {
	case "off":
		return nil, nil
	case "auto":
		if host == "" {
			return nil, nil
		}
	case "on":
		if host == "" {
			return nil, errors.New("-namespace-lookup on: not in a cluster (KUBERNETES_SERVICE_HOST unset)")
		}
	default:
		return nil, fmt.Errorf("-namespace-lookup %q: want auto, on or off", mode)
	}
	caPEM, err := os.ReadFile(saDir + "/ca.crt")
	if err != nil {
		return nil, fmt.Errorf("namespace lookup: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("namespace lookup: no certificate in the service account's ca.crt")
	}
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	if port == "" {
		port = "443"
	}
	base := "https://" + net.JoinHostPort(strings.Trim(host, "[]"), port)
	return inject.APINamespaces(client, base, saDir+"/token"), nil
}

// certReloader serves the webhook certificate, re-reading the files when
// their modification time changes, so a rotated certificate (cert-manager)
// is used without a restart.
type certReloader struct {
	certFile, keyFile string

	mu      sync.Mutex
	modTime time.Time
	cert    *tls.Certificate
}

func (c *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	st, err := os.Stat(c.certFile)
	if err != nil {
		return nil, fmt.Errorf("webhook certificate: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert != nil && st.ModTime().Equal(c.modTime) {
		return c.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		if c.cert != nil {
			return c.cert, nil // keep the last good one during a rewrite
		}
		return nil, fmt.Errorf("webhook certificate: %w", err)
	}
	c.cert, c.modTime = &cert, st.ModTime()
	return c.cert, nil
}
