package httpproxy

import (
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/seed722d2a70/meshproxy/internal/logtest"
	"github.com/seed722d2a70/meshproxy/internal/tcptest"
)

// The lines a failed request logs name each field once. The proxies hand
// the server a logger that already names the direction, so the server must
// not add it again: a JSON reader keeping the last of two equal keys would
// hide the repeat, log pipelines that reject it would drop the line.
func TestFailureLogLinesNameEachFieldOnce(t *testing.T) {
	nobody, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := nobody.Addr().String()
	_ = nobody.Close() // connections to it are refused from now on
	cutShort := tcptest.Serve(t, func(c net.Conn) {
		defer c.Close()
		_, _ = c.Read(make([]byte, 4096))
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial")
	})
	tests := []struct {
		name     string
		upstream string
		refuse   string
		message  string
	}{
		{name: "upstream unreachable", upstream: unreachable, message: "request failed"},
		{name: "refused", refuse: "unauthorized", message: "request failed"},
		{name: "response cut short", upstream: cutShort, message: "response cut short"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			log := zap.New(core).With(zap.String("direction", "outbound")) // as outbound.New does
			s, _, _ := startServer(t, Config{Direction: "outbound", Log: log})
			tr := NewTransport(TransportConfig{Dial: dialTo(tt.upstream)})
			t.Cleanup(tr.CloseIdleConnections)
			addr := serveOne(t, s, &Conn{Transport: tr, Upstream: tt.upstream, Refuse: tt.refuse, Labels: Labels{Direction: "outbound", TLS: "true"}})

			_, _ = exchangeRaw(t, addr, "GET / HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")
			deadline := time.Now().Add(5 * time.Second)
			for logs.FilterMessage(tt.message).Len() == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("no %q log line; logs: %v", tt.message, logs.All())
				}
				time.Sleep(10 * time.Millisecond)
			}
			logtest.CheckEntries(t, logs.All())
			if got := logs.FilterMessage(tt.message).All()[0].ContextMap()["direction"]; got != "outbound" {
				t.Errorf("%q logged direction %v, want outbound", tt.message, got)
			}
		})
	}
}
