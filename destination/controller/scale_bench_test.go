package controller_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/seed722d2a70/meshproxy/destination"
	pb "github.com/seed722d2a70/meshproxy/destination/destinationpb"
	"github.com/seed722d2a70/meshproxy/identity"
	"github.com/seed722d2a70/meshproxy/test/kubetest"
)

// changeTimeout is how long every subscriber of a changed Service may take
// to see the change before the run fails: no timing is asserted, but a
// subscriber that never sees a change is a bug.
const changeTimeout = 30 * time.Second

// BenchmarkControllerScale runs one controller process against 10 000
// endpoints across 1 000 Services with 2 000 subscribed proxies, on a real
// apiserver, and reports the controller's RSS, the time from an
// EndpointSlice change to its last subscriber's update (p50, p99, max) and
// the controller's CPU time per change and per update sent, in two
// scenarios: changes spread over random Services (2 subscribers each), and
// changes to one Service every proxy watches. It does its own iterations:
// run it once (-benchtime 1x; make bench-destination). It takes minutes, so
// it runs only with MESHPROXY_SCALE_BENCH=1. MESHPROXY_SCALE_PROFILE=<dir>
// also writes the controller's profiles there: heap-steady.pprof and
// heap-end.pprof, and cpu-hot.pprof taken during the hot scenario.
func BenchmarkControllerScale(b *testing.B) {
	if os.Getenv("MESHPROXY_SCALE_BENCH") != "1" {
		b.Skip("set MESHPROXY_SCALE_BENCH=1 to run it (minutes: 10 000 pods on a real apiserver); make bench-destination does")
	}
	sc := scaleFromEnv(b)
	began, loadAtStart := time.Now(), loadAverage()
	var setup []string // "step duration", for the report
	step := func(what string, since time.Time) {
		d := time.Since(since).Round(10 * time.Millisecond)
		setup = append(setup, what+" "+d.String())
		b.Logf("%s: %s", what, d)
	}

	if _, err := buildOnce(); err != nil { // not to count in the controller's start
		b.Fatal(err)
	}
	step("build", began)
	t0 := time.Now()
	cluster := kubetest.Start(b, kubetest.Options{})
	step("control plane", t0)
	t0 = time.Now()
	w := populate(b, cluster, sc)
	step("objects", t0)

	t0 = time.Now()
	caDir := b.TempDir()
	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	ca, _, err := identity.LoadOrCreateCA(caDir, td)
	if err != nil {
		b.Fatal(err)
	}
	ctrl := startScaleController(b, "-kubeconfig", cluster.Kubeconfig, "-ca-dir", caDir, "-dev-trust-domain", trustDomain)
	step("controller ready", t0)
	proc := procStats{b: b, ctrl: ctrl}

	// The proxies: one SVID shared, but a TLS configuration (so a session
	// cache) and a connection each, so every one does a full handshake.
	src, err := identity.NewDevSource(ca, spiffeid.RequireFromString("spiffe://"+trustDomain+"/ns/scale/sa/proxy"), time.Hour, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = src.Close() })
	f := newFleet(b, ctrl.API, sc.subscribers, func() *tls.Config {
		return identity.ClientConfig(src, tlsconfig.AuthorizeMemberOf(td), identity.WithNextProtos("h2"))
	})

	t0 = time.Now()
	subsOf := make([][]*destination.Watch, sc.services)
	for c := range sc.subscribers {
		i := c % sc.services
		subsOf[i] = append(subsOf[i], f.watch(c, svcAddr(w.services[i], 80)))
	}
	for i, ws := range subsOf {
		if err := waitAll(ws, 2*time.Minute, hasEndpoints(sc.podsPerService)); err != nil {
			b.Fatalf("first answer for %s: %v", serviceName(i), err)
		}
	}
	step(fmt.Sprintf("%d subscribers answered", sc.subscribers), t0)
	time.Sleep(2 * time.Second) // let the subscription burst's garbage go
	steady := proc.sample()
	// The background the scenarios' CPU time includes: informers, gRPC
	// keepalives, the runtime.
	const idleFor = 5 * time.Second
	cpu0 := proc.cpu()
	time.Sleep(idleFor)
	idle := (proc.cpu() - cpu0) / (idleFor / time.Second) // per second
	b.Logf("controller idle with %d streams: %s CPU/s", sc.subscribers, idle)
	profiles := newProfiler(b, ctrl)
	profiles.heap("heap-steady.pprof")

	rng := rand.New(rand.NewPCG(1, 2)) // the same Services every run
	spread := runScenario(b, "spread", w, proc, sc.spreadChanges,
		func(int) (int, int) { return rng.IntN(sc.services), rng.IntN(sc.podsPerService) },
		func(i int) []*destination.Watch { return subsOf[i] })

	// Every proxy watches one more address: Service 0's.
	const hotService = 0
	t0 = time.Now()
	var hot []*destination.Watch
	for c := range sc.subscribers {
		hot = append(hot, f.watch(c, svcAddr(w.services[hotService], 80)))
	}
	if err := waitAll(hot, 2*time.Minute, hasEndpoints(w.readyCount(hotService))); err != nil {
		b.Fatalf("first answer for the hot Service: %v", err)
	}
	hotSubs := append(slices.Clone(subsOf[hotService]), hot...)
	b.Logf("%d more subscriptions (to %s) answered in %s", len(hot), serviceName(hotService), time.Since(t0).Round(10*time.Millisecond))
	time.Sleep(2 * time.Second)
	withHot := proc.sample()

	profiled := profiles.startCPU("cpu-hot.pprof")
	hotRes := runScenario(b, fmt.Sprintf("hot (%d subscribers)", len(hotSubs)), w, proc, sc.hotChanges,
		func(k int) (int, int) { return hotService, k % sc.podsPerService },
		func(int) []*destination.Watch { return hotSubs })
	profiled()
	end := proc.sample()
	profiles.heap("heap-end.pprof")

	reportScale(b, scaleReport{
		sc: sc, setup: setup, total: time.Since(began), loadAtStart: loadAtStart, idle: idle,
		scenarios: []scenarioResult{spread, hotRes},
		samples:   []namedSample{{"steady", "steady", steady}, {"with hot watches", "hot", withHot}, {"end", "end", end}},
	})
}

// scaleReport is what a run measured, for reportScale.
type scaleReport struct {
	sc          scaleConfig
	setup       []string // "step duration"
	total       time.Duration
	loadAtStart string
	idle        time.Duration // the controller's CPU time per second, idle
	scenarios   []scenarioResult
	samples     []namedSample // the last is the end's
}

type namedSample struct {
	when, metric string // for the table, in the metrics' names
	procSample
}

// reportScale reports the figures as the benchmark's metrics, and logs
// them as tables.
func reportScale(b *testing.B, r scaleReport) {
	for _, s := range r.scenarios {
		prefix := strings.Fields(s.name)[0]
		b.ReportMetric(ms(percentile(s.latencies, 0.50)), prefix+"-p50-ms")
		b.ReportMetric(ms(percentile(s.latencies, 0.99)), prefix+"-p99-ms")
		b.ReportMetric(ms(percentile(s.latencies, 1)), prefix+"-max-ms")
		b.ReportMetric(s.cpu.Seconds()*1e3/float64(s.changes), prefix+"-cpu-ms/change")
		b.ReportMetric(s.cpu.Seconds()*1e6/float64(s.updates), prefix+"-cpu-us/update")
	}
	for _, s := range r.samples {
		b.ReportMetric(s.rssMiB, "rss-"+s.metric+"-MiB")
	}
	end := r.samples[len(r.samples)-1]
	b.ReportMetric(r.idle.Seconds()*1e3, "idle-cpu-ms/s")
	b.ReportMetric(end.heapMiB, "heap-end-MiB")
	b.ReportMetric(end.goroutines, "goroutines")
	b.ReportMetric(0, "ns/op") // one run of minutes: not a per-op time

	var t strings.Builder
	fmt.Fprintf(&t, "\nscale: %d Services in %d namespaces, %d pods/endpoints, %d subscribers (one connection each); %d cores\n",
		r.sc.services, r.sc.namespaces, r.sc.services*r.sc.podsPerService, r.sc.subscribers, runtime.NumCPU())
	fmt.Fprintf(&t, "load average: %s at the start, %s at the end (other work shares the machine)\n", r.loadAtStart, loadAverage())
	fmt.Fprintf(&t, "setup: %s; whole run %s\n", strings.Join(r.setup, ", "), r.total.Round(time.Second))
	fmt.Fprintf(&t, "controller idle with %d streams: %s CPU per second\n\n", r.sc.subscribers, roundDur(r.idle))
	tw := tabwriter.NewWriter(&t, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tchanges\tupdates\tp50\tp99\tmax\tCPU/change\tCPU/update\twall\t")
	for _, s := range r.scenarios {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", s.name, s.changes, s.updates,
			roundDur(percentile(s.latencies, 0.5)), roundDur(percentile(s.latencies, 0.99)), roundDur(percentile(s.latencies, 1)),
			roundDur(s.cpu/time.Duration(s.changes)), roundDur(s.cpu/time.Duration(s.updates)), s.elapsed.Round(time.Millisecond))
	}
	_ = tw.Flush()
	fmt.Fprintln(&t)
	tw = tabwriter.NewWriter(&t, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "controller\tstreams\tRSS\theap in use\tgoroutines\tCPU so far\t")
	for _, s := range r.samples {
		fmt.Fprintf(tw, "%s\t%.0f\t%.1f MiB\t%.1f MiB\t%.0f\t%s\t\n", s.when, s.streams, s.rssMiB, s.heapMiB, s.goroutines, s.cpu.Round(10*time.Millisecond))
	}
	_ = tw.Flush()
	b.Log(t.String())
}

// scenarioResult is a series of slice changes, each timed from the
// Update's return to the moment the last subscriber of the Service saw it.
type scenarioResult struct {
	name      string
	changes   int
	updates   int // subscriber updates the changes called for
	latencies []time.Duration
	cpu       time.Duration // the controller's CPU time meanwhile
	elapsed   time.Duration
}

// runScenario makes n changes, one at a time: pick names the Service and
// the endpoint whose readiness flips, subs the Service's subscribers.
func runScenario(b *testing.B, name string, w *world, proc procStats, n int, pick func(k int) (svc, ep int), subs func(svc int) []*destination.Watch) scenarioResult {
	b.Helper()
	r := scenarioResult{name: name, changes: n}
	cpu0 := proc.cpu()
	start := time.Now()
	for k := range n {
		i, j := pick(k)
		want, err := w.flip(i, j)
		if err != nil {
			b.Fatal(err)
		}
		changed := time.Now()
		ws := subs(i)
		if err := waitAll(ws, changeTimeout, hasEndpoints(want)); err != nil {
			b.Fatalf("%s: change %d (%s endpoint %d, %d ready): %v", name, k, serviceName(i), j, want, err)
		}
		r.latencies = append(r.latencies, time.Since(changed))
		r.updates += len(ws)
	}
	r.elapsed = time.Since(start)
	r.cpu = proc.cpu() - cpu0
	b.Logf("%s: %d changes in %s", name, n, r.elapsed.Round(time.Millisecond))
	return r
}

// waitAll returns when every watch's state satisfies cond: waiting for
// each in turn, the last return is when the slowest got there.
func waitAll(ws []*destination.Watch, within time.Duration, cond func(destination.State) bool) error {
	timeout := time.NewTimer(within)
	defer timeout.Stop()
	for n, w := range ws {
		for {
			changed := w.Changed()
			if s, ok := w.State(); ok && cond(s) {
				break
			}
			select {
			case <-changed:
			case <-timeout.C:
				s, _ := w.State()
				return fmt.Errorf("after %v, subscriber %d of %d still has %s", within, n+1, len(ws), describe(s))
			}
		}
	}
	return nil
}

func hasEndpoints(n int) func(destination.State) bool {
	return func(s destination.State) bool { return s.Kind == pb.Kind_KIND_SERVICE && len(s.Endpoints) == n }
}

// fleet is the subscribed proxies: a client, so a connection, each.
type fleet struct {
	clients []*destination.Client
	watches []*destination.Watch
	cancels []context.CancelFunc
}

// newFleet makes n clients of the controller at addr, closed when b ends
// after their watches have stopped.
func newFleet(b *testing.B, addr string, n int, tlsConfig func() *tls.Config) *fleet {
	b.Helper()
	f := &fleet{}
	b.Cleanup(f.close)
	for range n {
		c, err := destination.NewClient(addr, tlsConfig(), nil)
		if err != nil {
			b.Fatal(err)
		}
		f.clients = append(f.clients, c)
	}
	return f
}

// watch starts a watch of address by client c.
func (f *fleet) watch(c int, address string) *destination.Watch {
	ctx, cancel := context.WithCancel(context.Background())
	w := f.clients[c].Watch(ctx, address)
	f.watches, f.cancels = append(f.watches, w), append(f.cancels, cancel)
	return w
}

func (f *fleet) close() {
	for _, cancel := range f.cancels {
		cancel()
	}
	for _, w := range f.watches {
		<-w.Done()
	}
	for _, c := range f.clients {
		_ = c.Close()
	}
}

// percentile is the nearest-rank q-quantile of ds (q = 1: the maximum).
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	i := int(math.Ceil(float64(len(s))*q)) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return d.Seconds() * 1e3 }

// roundDur keeps three significant digits or so.
func roundDur(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(100 * time.Nanosecond)
}

// loadAverage is the machine's 1, 5 and 15 minute load averages.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}
