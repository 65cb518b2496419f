// Package admin serves the proxy's admin endpoints: liveness, readiness,
// Prometheus metrics, the log level, and a shutdown trigger.
//
// The admin port is scraped by Prometheus and probed by the kubelet, so it is
// reachable from outside the pod; it therefore exposes nothing secret, and
// the endpoints that change the proxy's state (/shutdown, setting the log
// level, profiling) answer only requests from loopback.
package admin

import (
	"net"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// Options configures the admin handler. Gatherer and Level are required.
type Options struct {
	// Gatherer is what /metrics serves.
	Gatherer prometheus.Gatherer
	// Ready reports whether the proxy can take traffic: its listeners are up
	// and it holds a valid identity. Nil means always ready.
	Ready func() bool
	// Level is the logger's level, read and set through /log-level.
	Level zap.AtomicLevel
	// Shutdown is called once per accepted POST /shutdown; it should start a
	// graceful shutdown and return without waiting for it.
	Shutdown func()
}

// NewHandler returns the admin HTTP handler.
func NewHandler(o Options) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("live\n"))
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if o.Ready != nil && !o.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
	mux.Handle("GET /log-level", o.Level)
	mux.Handle("PUT /log-level", loopbackOnly(o.Level))
	mux.Handle("POST /shutdown", loopbackOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if o.Shutdown != nil {
			o.Shutdown()
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte("shutdown\n"))
	})))
	mux.Handle("/debug/pprof/", loopbackOnly(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/profile", loopbackOnly(http.HandlerFunc(pprof.Profile)))
	return mux
}

// loopbackOnly refuses requests whose peer is not a loopback address.
func loopbackOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			http.Error(w, "forbidden: only from loopback", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}
