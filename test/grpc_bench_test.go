package test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
)

// BenchmarkGRPCUnaryConcurrent measures unary calls from 50 concurrent
// callers sharing one client connection: directly to the app, through the
// go-tls baseline (a bare TLS tunnel pair, see goTLSTunnel), through the
// proxy pair (HTTP/2 with the frame relay, the default) and through a pair
// with HTTP/2 on net/http (--http2-relay=false). It reports each one's calls per second
// and the meshes' ratios to go-tls. The four take turns in rounds of 1000
// calls, so that all see the same machine load.
func BenchmarkGRPCUnaryConcurrent(b *testing.B) {
	port := grpcEchoApp(b)
	ccs := []*grpc.ClientConn{
		grpcClient(b, "127.0.0.1:"+itoa(port), port),
		grpcClient(b, goTLSTunnel(b, port), port),
		grpcClient(b, startPair(b, port, pairOptions{}).listen, port),
		grpcClient(b, startPair(b, port, pairOptions{netHTTP2: true}).listen, port),
	}
	const callers, round = 50, 1000
	run := func(cc *grpc.ClientConn, n int) time.Duration {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		errs := make(chan error, callers)
		for i := range callers {
			go func() {
				in, out := make([]byte, 64), []byte(nil)
				var err error
				for j := i; j < n && err == nil; j += callers {
					err = cc.Invoke(ctx, "/meshtest.Echo/Unary", &in, &out)
				}
				errs <- err
			}()
		}
		for range callers {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	for _, cc := range ccs {
		run(cc, callers) // connections up before timing
	}
	b.ReportAllocs()
	b.ResetTimer()
	elapsed := make([]time.Duration, len(ccs))
	for done := 0; done < b.N; done += round {
		n := min(round, b.N-done)
		for i, cc := range ccs {
			elapsed[i] += run(cc, n)
		}
	}
	rate := func(i int) float64 { return float64(b.N) / elapsed[i].Seconds() }
	d, g, m, n := rate(0), rate(1), rate(2), rate(3)
	b.ReportMetric(d, "direct-calls/s")
	b.ReportMetric(g, "gotls-calls/s")
	b.ReportMetric(m, "mesh-calls/s")
	b.ReportMetric(n, "nethttp-calls/s")
	b.ReportMetric(m/g, "mesh/gotls")
	b.ReportMetric(n/g, "nethttp/gotls")
}

// BenchmarkGRPCStream100MB sends 100 MB in 1 MiB messages on one gRPC
// client stream through the proxy pair (the frame relay, the default),
// through a pair with HTTP/2 on net/http (--http2-relay=false), through a pair with
// the app's port opaque (bytes only, no HTTP/2 parsing), and through the
// go-tls baseline, and reports each one's throughput and the meshes' ratios
// to the opaque pair. One iteration is one 100 MB stream on each.
func BenchmarkGRPCStream100MB(b *testing.B) {
	port := grpcEchoApp(b)
	mesh := grpcClient(b, startPair(b, port, pairOptions{}).listen, port)
	netHTTP := grpcClient(b, startPair(b, port, pairOptions{netHTTP2: true}).listen, port)
	opaque := grpcClient(b, startPair(b, port, pairOptions{opaque: true}).listen, port)
	gotls := grpcClient(b, goTLSTunnel(b, port), port)
	const total, size = 100 << 20, 1 << 20
	chunk := make([]byte, size)
	send := func(cc *grpc.ClientConn) time.Duration {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		s, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, "/meshtest.Echo/ClientStream")
		if err != nil {
			b.Fatal(err)
		}
		for range total / size {
			if err := s.SendMsg(&chunk); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.CloseSend(); err != nil {
			b.Fatal(err)
		}
		var reply []byte
		if err := s.RecvMsg(&reply); err != nil {
			b.Fatal(err)
		}
		if !strings.HasPrefix(string(reply), strconv.Itoa(total)+" ") {
			b.Fatalf("the app saw %q", reply)
		}
		return time.Since(start)
	}
	var m, r, o, g time.Duration
	b.ReportAllocs()
	b.SetBytes(total)
	for b.Loop() {
		m += send(mesh)
		r += send(netHTTP)
		o += send(opaque)
		g += send(gotls)
	}
	mbps := func(d time.Duration) float64 { return float64(b.N) * total / (1 << 20) / d.Seconds() }
	b.ReportMetric(mbps(m), "mesh-MB/s")
	b.ReportMetric(mbps(r), "nethttp-MB/s")
	b.ReportMetric(mbps(o), "opaque-MB/s")
	b.ReportMetric(mbps(g), "gotls-MB/s")
	b.ReportMetric(mbps(m)/mbps(o), "mesh/opaque")
	b.ReportMetric(mbps(r)/mbps(o), "nethttp/opaque")
}
