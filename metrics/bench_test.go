package metrics

import (
	"io"
	"net"
	"testing"

	"github.com/seed722d2a70/meshproxy/internal/tcptest"
)

// BenchmarkConn measures a write and a read of 1 KiB through a conn, tracked
// or not: the difference is the wrapper's cost, and allocs/op must stay 0.
func BenchmarkConn(b *testing.B) {
	for _, tracked := range []bool{false, true} {
		name := "plain"
		if tracked {
			name = "tracked"
		}
		b.Run(name, func(b *testing.B) {
			tr, err := NewTransport(nil)
			if err != nil {
				b.Fatal(err)
			}
			peer, server := tcptest.Pair(b)
			var c net.Conn = server
			if tracked {
				c = tr.Track(server, testLabels)
				defer c.Close()
			}
			buf, back := make([]byte, 1024), make([]byte, 1024)
			b.SetBytes(2 * int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(peer, back); err != nil {
					b.Fatal(err)
				}
				if _, err := peer.Write(back); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
