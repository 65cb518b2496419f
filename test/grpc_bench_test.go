package test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
)

// BenchmarkGRPCUnaryConcurrent measures unary calls from 50 concurrent
// callers sharing one client connection: directly to the app, through the
// go-tls baseline (a bare TLS tunnel pair, see goTLSTunnel) and through the
// proxy pair. It reports each one's calls per second and the mesh's ratio
// to both. They run one after the other, so read the ratios against
// -count repetitions.
func BenchmarkGRPCUnaryConcurrent(b *testing.B) {
	port := grpcEchoApp(b)
	p := startPair(b, port, pairOptions{})
	direct := grpcClient(b, "127.0.0.1:"+itoa(port), port)
	gotls := grpcClient(b, goTLSTunnel(b, port), port)
	mesh := grpcClient(b, p.listen, port)
	const callers = 50
	run := func(cc *grpc.ClientConn, n int) float64 {
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
		return float64(n) / time.Since(start).Seconds()
	}
	run(direct, callers) // connections up before timing
	run(gotls, callers)
	run(mesh, callers)
	b.ReportAllocs()
	b.ResetTimer()
	d := run(direct, b.N)
	g := run(gotls, b.N)
	m := run(mesh, b.N)
	b.ReportMetric(d, "direct-calls/s")
	b.ReportMetric(g, "gotls-calls/s")
	b.ReportMetric(m, "mesh-calls/s")
	b.ReportMetric(m/d, "mesh/direct")
	b.ReportMetric(m/g, "mesh/gotls")
}
