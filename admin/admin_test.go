package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "admin_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	var ready atomic.Bool
	var shutdowns atomic.Int32
	level := zap.NewAtomicLevelAt(zapcore.InfoLevel)
	h := NewHandler(Options{
		Gatherer: reg,
		Ready:    ready.Load,
		Level:    level,
		Shutdown: func() { shutdowns.Add(1) },
	})

	tests := []struct {
		name       string
		method     string
		path       string
		remote     string
		body       string
		setup      func()
		wantStatus int
		wantBody   string
	}{
		{name: "live", method: "GET", path: "/live", wantStatus: 200, wantBody: "live"},
		{name: "not ready", method: "GET", path: "/ready", wantStatus: 503, wantBody: "not ready"},
		{name: "ready", method: "GET", path: "/ready", setup: func() { ready.Store(true) }, wantStatus: 200, wantBody: "ready"},
		{name: "metrics", method: "GET", path: "/metrics", wantStatus: 200, wantBody: "admin_test_total 3"},
		{name: "log level get", method: "GET", path: "/log-level", remote: "10.0.0.1:5000", wantStatus: 200, wantBody: `"level":"info"`},
		{name: "log level put remote", method: "PUT", path: "/log-level", remote: "10.0.0.1:5000", body: `{"level":"debug"}`, wantStatus: 403},
		{name: "log level put loopback", method: "PUT", path: "/log-level", body: `{"level":"debug"}`, wantStatus: 200, wantBody: `"level":"debug"`},
		{name: "shutdown get", method: "GET", path: "/shutdown", wantStatus: 405},
		{name: "shutdown remote", method: "POST", path: "/shutdown", remote: "10.0.0.1:5000", wantStatus: 403},
		{name: "shutdown remote v6", method: "POST", path: "/shutdown", remote: "[fd00::1]:5000", wantStatus: 403},
		{name: "shutdown loopback", method: "POST", path: "/shutdown", wantStatus: 202},
		{name: "shutdown loopback v6", method: "POST", path: "/shutdown", remote: "[::1]:5000", wantStatus: 202},
		{name: "pprof remote", method: "GET", path: "/debug/pprof/", remote: "10.0.0.1:5000", wantStatus: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup()
			}
			req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
			req.RemoteAddr = "127.0.0.1:5000"
			if tt.remote != "" {
				req.RemoteAddr = tt.remote
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			body, _ := io.ReadAll(rec.Body)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %q)", rec.Code, tt.wantStatus, body)
			}
			if !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("body %q does not contain %q", body, tt.wantBody)
			}
		})
	}
	if got := shutdowns.Load(); got != 2 {
		t.Errorf("shutdown called %d times, want 2 (once per loopback POST)", got)
	}
	if level.Level() != zapcore.DebugLevel {
		t.Errorf("level = %v, want debug", level.Level())
	}
}

var _ http.Handler = NewHandler(Options{Gatherer: prometheus.NewRegistry(), Level: zap.NewAtomicLevel()})
