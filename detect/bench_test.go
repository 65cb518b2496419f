package detect

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"
)

// memConn is an in-memory net.Conn whose data is all available at once. It
// is used only in benchmarks: they measure the CPU time and allocations of
// the detector itself, which a real socket's system calls and scheduler
// wake-ups would drown out. Behaviour is tested over real TCP.
type memConn struct {
	data []byte
	off  int
}

func (c *memConn) Read(p []byte) (int, error) {
	if c.off >= len(c.data) {
		return 0, io.EOF
	}
	n := copy(p, c.data[c.off:])
	c.off += n
	return n, nil
}

func (c *memConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return memAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "mem" }

// Every detection with bytes to replay allocates exactly one object, the
// *Conn it returns (96 B): it outlives the call, for as long as the client's
// connection. That allocation is the one left on purpose. Pooling it would
// need every caller to give it back exactly once after its last use, and a
// stale reference to a recycled Conn would read another client's bytes;
// keeping it next to the pooled buffer would hold 8 KiB per connection
// instead of 96 B. Everything else comes from the Detector: the buffer from
// its pool, cancellation from one registration per context (not a
// context.AfterFunc per detection), and a ClientHello's server name and ALPN
// list from its interner once seen. TestDetectAllocations keeps it so.

// benchDetect detects data over and over, draining the replay each time so
// the buffer goes back to the pool as it does in real use.
func benchDetect(b *testing.B, ctx context.Context, d *Detector, data []byte, want Outcome) {
	b.Helper()
	c := &memConn{data: data}
	sink := make([]byte, DefaultBufferSize)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		c.off = 0
		res, conn, err := d.Detect(ctx, c)
		if err != nil || res.Outcome != want {
			b.Fatalf("got %v, %v", res.Outcome, err)
		}
		for {
			if _, err := conn.Read(sink); err != nil {
				break
			}
		}
	}
}

func BenchmarkDetectHTTP1(b *testing.B) {
	data := []byte("GET /api/v1/users/42?fields=name,email HTTP/1.1\r\nHost: users.default.svc.cluster.local\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	m, err := NewMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.Run("plain", func(b *testing.B) {
		benchDetect(b, context.Background(), New(Config{}), data, OutcomeHTTP1)
	})
	b.Run("metrics", func(b *testing.B) {
		benchDetect(b, context.Background(), New(Config{Direction: Outbound, Metrics: m}), data, OutcomeHTTP1)
	})
	// A cancelable context joins the detections already waiting under it.
	b.Run("cancelable-ctx", func(b *testing.B) {
		benchDetect(b, ctx, New(Config{}), data, OutcomeHTTP1)
	})
}

func BenchmarkDetectHTTP2Preface(b *testing.B) {
	// The preface followed by an empty SETTINGS frame, as gRPC clients send.
	data := []byte(http2Preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00")
	benchDetect(b, context.Background(), New(Config{}), data, OutcomeHTTP2)
}

func BenchmarkDetectOpaqueFirstByte(b *testing.B) {
	// A PostgreSQL SSLRequest: binary from the first byte.
	data := []byte("\x00\x00\x00\x08\x04\xd2\x16\x2f")
	benchDetect(b, context.Background(), New(Config{}), data, OutcomeOpaque)
}

func BenchmarkDetectTLSClientHello(b *testing.B) {
	data := captureClientHello(b, &tls.Config{ServerName: "api.example.com", NextProtos: []string{"h2", "http/1.1"}})
	benchDetect(b, context.Background(), New(Config{}), data, OutcomeOpaque)
}

func BenchmarkClassify(b *testing.B) {
	for _, bc := range []struct {
		name string
		data string
	}{
		{"http1", "GET /api/v1/users/42?fields=name,email HTTP/1.1\r\nHost: users\r\n\r\n"},
		{"http2", http2Preface},
		{"opaque", "\x16\x03\x01\x02\x00"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			data := []byte(bc.data)
			b.ReportAllocs()
			for b.Loop() {
				if _, done := Classify(data); !done {
					b.Fatal("undecided")
				}
			}
		})
	}
}
