package test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// A flood of 20 000 silent and 2 000 slow (a ClientHello byte a second)
// connections to the inbound port, from ten source addresses (more than
// the total cap holds at the per-source cap, so the oldest are shed too),
// holds the proxy, with its default limits, under 64 MiB of RSS and a known
// number of descriptors, while a good peer from another address gets its
// handshake and echo through every time; afterwards its goroutines,
// descriptors and Go heap are back to where they were.
func TestInboundFloodHeldUnder64MiBWhileGoodPeersGetThrough(t *testing.T) {
	m := meshtest.NewMesh(t)
	p := overloadProxy(t, m, meshtest.ProcessOptions{})
	pid := p.Cmd.Process.Pid
	app := echoApp(t)
	good := svid(t, m, "client", time.Hour)
	inbound := p.Inbound

	// Baseline, after one good connection has warmed everything up.
	if err := meshEcho(inbound, good, app); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	forceGC(t, p.Admin)
	baseRSS, baseFDs := procStatus(t, pid)
	baseGoroutines := p.Metric(t, "go_goroutines", nil)
	// Live heap after a collection (HeapAlloc): what a leak would grow.
	// Heap in use counts whole spans, which churn leaves fragmented.
	baseHeap := p.Metric(t, "go_memstats_alloc_bytes", nil)
	t.Logf("baseline: RSS %.1f MiB, %d fds, %v goroutines, live Go heap %.1f MiB", mib(baseRSS), baseFDs, baseGoroutines, mib(int64(baseHeap)))

	// Sample the proxy while the flood runs.
	var (
		mu              sync.Mutex
		maxRSS          int64
		maxFDs          int
		sampling        = make(chan struct{})
		samplerFinished = make(chan struct{})
	)
	go func() {
		defer close(samplerFinished)
		for {
			// Not procStatus: t.Fatal belongs to the test's goroutine.
			rss, fds, err := readProcStatus(pid)
			if err != nil {
				return
			}
			mu.Lock()
			maxRSS, maxFDs = max(maxRSS, rss), max(maxFDs, fds)
			mu.Unlock()
			select {
			case <-sampling:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	// Good peers, one after another, for as long as the flood lasts.
	var latencies []time.Duration
	var failures []string
	stopGood := make(chan struct{})
	goodFinished := make(chan struct{})
	go func() {
		defer close(goodFinished)
		for {
			select {
			case <-stopGood:
				return
			default:
			}
			start := time.Now()
			if err := meshEcho(inbound, good, app); err != nil {
				failures = append(failures, err.Error())
			} else {
				latencies = append(latencies, time.Since(start))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()

	floodStart := time.Now()
	var floods []*floodProcess
	const silentSources, slowSources = 8, 2
	for i := range silentSources {
		floods = append(floods, startFlood(t, "silent", fmt.Sprintf("127.0.0.%d", 2+i), inbound, 20000/silentSources))
	}
	for i := range slowSources {
		floods = append(floods, startFlood(t, "slow", fmt.Sprintf("127.0.0.%d", 2+silentSources+i), inbound, 2000/slowSources))
	}
	const sources = silentSources + slowSources
	if sources*config.DefaultMaxPendingPerSource <= config.DefaultMaxPending {
		t.Fatalf("%d sources at the per-source cap do not reach the total cap", sources)
	}
	for i, f := range floods {
		select {
		case r := <-f.report:
			t.Logf("flood %d: %s", i, r)
			if !strings.HasPrefix(r, "connected") {
				t.Fatalf("flood helper %d: %q", i, r)
			}
		case <-time.After(40 * time.Second):
			t.Fatalf("flood helper %d did not finish opening its connections", i)
		}
	}
	t.Logf("flood opened in %v", time.Since(floodStart).Round(time.Millisecond))
	// Hold it: the slow ones trickle their bytes meanwhile.
	time.Sleep(3 * time.Second)
	pending := p.Metric(t, "inbound_pending_connections", nil)
	shedSource := p.Metric(t, "inbound_connections_shed_total", map[string]string{"reason": "source_limit"})
	shedOldest := p.Metric(t, "inbound_connections_shed_total", map[string]string{"reason": "oldest"})
	close(stopGood)
	<-goodFinished
	close(sampling)
	<-samplerFinished
	for _, f := range floods {
		f.stop()
	}

	t.Logf("during the flood: %v pending, %v reset for their source's limit, %v as the oldest; max RSS %.1f MiB, max %d fds",
		pending, shedSource, shedOldest, mib(maxRSS), maxFDs)
	t.Logf("good peers: %d handshake+echo, p50 %v, p99 %v, max %v, %d failed",
		len(latencies), percentile(latencies, 0.5), percentile(latencies, 0.99), percentile(latencies, 1), len(failures))
	if len(failures) > 0 {
		t.Errorf("%d good peers failed during the flood, first: %s", len(failures), failures[0])
	}
	if len(latencies) < 10 {
		t.Errorf("only %d good peers got through", len(latencies))
	}
	if maxRSS >= 64<<20 {
		t.Errorf("RSS reached %.1f MiB during the flood, want under 64 MiB", mib(maxRSS))
	}
	// The total cap, the good peer's connections, and a little slack for
	// connections being reset.
	fdBound := baseFDs + config.DefaultMaxPending + 64
	if maxFDs > fdBound {
		t.Errorf("%d fds during the flood, want at most %d", maxFDs, fdBound)
	}
	// The total cap, and the good peer's connection.
	if pending > float64(config.DefaultMaxPending+1) {
		t.Errorf("%v pending during the flood, want at most %d", pending, config.DefaultMaxPending+1)
	}
	if shedSource == 0 {
		t.Error("no connection counted in inbound_connections_shed_total{reason=source_limit}")
	}
	if shedOldest == 0 {
		t.Error("no connection counted in inbound_connections_shed_total{reason=oldest}: the total cap was never reached")
	}

	// Back to baseline, judged on what the flood could leak: descriptors,
	// goroutines and the Go heap in use, after a collection (the heap
	// profile's gc=1 asks for one). RSS is only reported, and held to the
	// flood's bound: Go gives freed memory back to the system gradually
	// (its scavenger), and the code pages the flood touched stay mapped,
	// so RSS settles above its baseline by an amount that says nothing
	// about leaks.
	meshtest.Eventually(t, "the proxy to return to its baseline", func() bool {
		forceGC(t, p.Admin)
		rss, fds := procStatus(t, pid)
		fam := p.Scrape(t)
		g := meshtest.Sum(fam, "go_goroutines", nil)
		heap := meshtest.Sum(fam, "go_memstats_alloc_bytes", nil)
		ok := fds <= baseFDs+2 && g <= baseGoroutines+5 && heap <= baseHeap+2<<20 &&
			meshtest.Sum(fam, "inbound_pending_connections", nil) == 0
		t.Logf("after: %d fds, %v goroutines, live Go heap %.1f MiB (in use %.1f, idle %.1f, released %.1f); RSS %.1f MiB (baseline %.1f)",
			fds, g, mib(int64(heap)), mib(int64(meshtest.Sum(fam, "go_memstats_heap_inuse_bytes", nil))),
			mib(int64(meshtest.Sum(fam, "go_memstats_heap_idle_bytes", nil))),
			mib(int64(meshtest.Sum(fam, "go_memstats_heap_released_bytes", nil))), mib(rss), mib(baseRSS))
		return ok
	})
	if rss, _ := procStatus(t, pid); rss >= 64<<20 {
		t.Errorf("RSS %.1f MiB after the flood, want under 64 MiB", mib(rss))
	}
	if err := meshEcho(inbound, good, app); err != nil {
		t.Errorf("a good peer after the flood: %v", err)
	}
}

// mib is a byte count in MiB.
func mib[T int64 | float64](b T) float64 { return float64(b) / (1 << 20) }

// forceGC makes the proxy whose admin server is at admin collect garbage.
func forceGC(t *testing.T, admin string) {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/debug/pprof/heap?gc=1")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}
