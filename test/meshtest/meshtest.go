// Package meshtest starts real meshproxy proxies in-process for behaviour
// tests: real listeners on loopback ports chosen by the kernel, real mTLS
// with identities from a dev CA the test owns, and each proxy's own metrics
// registry and logs to assert on.
package meshtest

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/identity"
	"github.com/seed722d2a70/meshproxy/internal/logtest"
	"github.com/seed722d2a70/meshproxy/proxy"
)

// TrustDomain is the trust domain of every Mesh.
const TrustDomain = "mesh.test"

// Mesh is a trust domain with its own dev CA.
type Mesh struct {
	CA *identity.CA
}

// NewMesh creates a mesh with a fresh CA.
func NewMesh(t testing.TB) *Mesh {
	t.Helper()
	ca, err := identity.NewCA(spiffeid.RequireTrustDomainFromString(TrustDomain))
	if err != nil {
		t.Fatal(err)
	}
	return &Mesh{CA: ca}
}

// ID returns spiffe://mesh.test/<name>.
func ID(name string) spiffeid.ID {
	return spiffeid.RequireFromString("spiffe://" + TrustDomain + "/" + name)
}

// Proxy is a running proxy.
type Proxy struct {
	Addrs    proxy.Addrs
	Registry *prometheus.Registry
	Logs     *observer.ObservedLogs

	cancel context.CancelFunc
	done   chan error
}

// Shutdown starts the proxy's graceful shutdown, as SIGTERM does, and
// returns a channel that receives Run's result.
func (p *Proxy) Shutdown() <-chan error {
	p.cancel()
	return p.done
}

// Config returns a configuration with every listener on a free loopback port
// and short timeouts, for tests to adjust.
func Config() config.Config {
	c := config.Default()
	c.Admin.Addr = "127.0.0.1:0"
	c.Inbound.Addr = "127.0.0.1:0"
	c.Outbound.Addr = "127.0.0.1:0"
	c.Identity.TrustDomain = TrustDomain
	c.ShutdownGrace = 2 * time.Second
	return c
}

// Start runs a proxy with the SPIFFE ID spiffe://mesh.test/<name> issued by
// m's CA, until the test ends.
func (m *Mesh) Start(t testing.TB, name string, cfg config.Config) *Proxy {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t, zaptest.Level(zapcore.InfoLevel)).Core())).Named(name)

	src, err := identity.NewDevSource(m.CA, ID(name), time.Hour, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	p, err := proxy.New(cfg, proxy.Options{Log: log, Registry: reg, Identity: src})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	result := make(chan error, 1)
	go func() {
		err := p.Run(ctx)
		done <- err
		result <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy %s: %v", name, err)
		}
		_ = src.Close()
	})
	readyCtx, readyCancel := context.WithTimeout(ctx, 10*time.Second)
	defer readyCancel()
	addrs, err := p.WaitReady(readyCtx)
	if err != nil {
		select {
		case runErr := <-done:
			t.Fatalf("proxy %s did not start: %v", name, runErr)
		default:
		}
		t.Fatalf("proxy %s not ready: %v", name, err)
	}
	return &Proxy{Addrs: addrs, Registry: reg, Logs: logs, cancel: cancel, done: result}
}

// Port returns the port of addr.
func Port(addr net.Addr) uint16 {
	_, p, _ := net.SplitHostPort(addr.String())
	n, _ := strconv.ParseUint(p, 10, 16)
	return uint16(n)
}

// Metric sums the values of every series of the named counter or gauge
// whose labels include all of want (a histogram counts its samples). A
// missing metric sums to 0.
func (p *Proxy) Metric(t testing.TB, name string, want map[string]string) float64 {
	t.Helper()
	families, err := p.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return Sum(families, name, want)
}

// Sum is Metric over gathered or scraped metric families.
func Sum(families []*dto.MetricFamily, name string, want map[string]string) float64 {
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if !hasLabels(m, want) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Eventually polls cond every 10 ms until it holds or 10 s pass: for
// effects that land asynchronously, such as a metric counted when a
// connection is closed on the far side.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// LogsContaining returns the log entries whose message contains s.
func (p *Proxy) LogsContaining(s string) []observer.LoggedEntry {
	return p.Logs.FilterMessageSnippet(s).All()
}

// CheckLogKeys fails t for every log entry so far that, written as the
// JSON line the proxy's JSON logs would hold, repeats a key. It returns the
// number of entries checked.
func (p *Proxy) CheckLogKeys(t testing.TB) int {
	t.Helper()
	return logtest.CheckEntries(t, p.Logs.All())
}

// Join joins host and port.
func Join(host string, port uint16) string {
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}
