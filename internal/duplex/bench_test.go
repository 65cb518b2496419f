package duplex

import (
	"context"
	"io"
	"testing"

	"github.com/seed722d2a70/meshproxy/metrics"
)

// benchmarkJoin measures steady-state copying from a to b through Join: one
// op is one 32 KiB chunk, so the setup of the join (a handful of allocations)
// vanishes and allocs/op shows whether the copy loop itself allocates.
func benchmarkJoin(b *testing.B, kindA, kindB string, tracked bool) {
	a, c := newLeg(b, kindA), newLeg(b, kindB)
	if tracked {
		tr, err := metrics.NewTransport(nil)
		if err != nil {
			b.Fatal(err)
		}
		a.inner = tr.Track(a.inner, metrics.Labels{Peer: metrics.PeerSrc})
		c.inner = tr.Track(c.inner, metrics.Labels{Peer: metrics.PeerDst})
	}
	done := startJoin(context.Background(), a, c, Options{Pool: NewBufferPool(0)})
	chunk := make([]byte, 32<<10)
	sendErr := make(chan error, 1)
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		for range b.N {
			if _, err := a.outer.Write(chunk); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- a.outer.(interface{ CloseWrite() error }).CloseWrite()
	}()
	n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{c.outer}, make([]byte, 64<<10))
	if err != nil {
		b.Fatal(err)
	}
	if want := int64(b.N * len(chunk)); n != want {
		b.Fatalf("received %d bytes, want %d", n, want)
	}
	b.StopTimer()
	if err := <-sendErr; err != nil {
		b.Fatal(err)
	}
	closeWriteOf(b, c.outer)
	if res := <-done; res.err != nil {
		b.Fatal(res.err)
	}
}

func BenchmarkJoinTCPToTCP(b *testing.B) { benchmarkJoin(b, "tcp", "tcp", false) }
func BenchmarkJoinTLSToTCP(b *testing.B) { benchmarkJoin(b, "tls", "tcp", false) }
func BenchmarkJoinTCPToTLS(b *testing.B) { benchmarkJoin(b, "tcp", "tls", false) }

// The same through metrics' counting conns, which must keep TCP to TCP on
// the splice path (0 allocs/op) and TLS legs on the pool.
func BenchmarkJoinTrackedTCPToTCP(b *testing.B) { benchmarkJoin(b, "tcp", "tcp", true) }
func BenchmarkJoinTrackedTLSToTCP(b *testing.B) { benchmarkJoin(b, "tls", "tcp", true) }
