package detect

import (
	"context"
	"crypto/tls"
	"testing"
)

// TestDetectAllocations checks that a detection allocates nothing but the
// *Conn it returns (see the comment above benchDetect): buffers, cancellation
// and a repeated ClientHello's names all come from the Detector.
func TestDetectAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items: allocation counts are meaningless")
	}
	cancelable, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	hello := captureClientHello(t, &tls.Config{ServerName: "API.example.com.", NextProtos: []string{"h2", "http/1.1"}})
	tests := []struct {
		name string
		ctx  context.Context
		cfg  Config
		data string
		want Outcome
	}{
		{"HTTP/1", context.Background(), Config{}, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", OutcomeHTTP1},
		{"HTTP/1 with metrics", context.Background(), Config{Direction: Inbound, Metrics: m}, "GET / HTTP/1.1\r\n", OutcomeHTTP1},
		{"HTTP/1, cancelable context", cancelable, Config{}, "GET / HTTP/1.1\r\n", OutcomeHTTP1},
		{"HTTP/2 preface", context.Background(), Config{}, http2Preface, OutcomeHTTP2},
		{"opaque first byte", context.Background(), Config{}, "\x00\x00\x00\x08", OutcomeOpaque},
		{"TLS ClientHello", cancelable, Config{}, string(hello), OutcomeOpaque},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := New(tt.cfg)
			c := &memConn{data: []byte(tt.data)}
			sink := make([]byte, len(tt.data)+1)
			// AllocsPerRun's warm-up run fills the pools and the interner.
			allocs := testing.AllocsPerRun(100, func() {
				c.off = 0
				res, conn, err := d.Detect(tt.ctx, c)
				if err != nil || res.Outcome != tt.want {
					t.Fatalf("got %v, %v; want %v", res.Outcome, err, tt.want)
				}
				for {
					if _, err := conn.Read(sink); err != nil {
						break
					}
				}
			})
			if allocs > 1 {
				t.Errorf("%v allocations per detection, want 1 (the returned *Conn)", allocs)
			}
		})
	}
}
