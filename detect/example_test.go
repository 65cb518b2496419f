package detect_test

import (
	"context"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/detect"
)

// A listener's accept loop detects each connection's protocol and hands the
// replaying connection to the matching handler.
func ExampleDetector_Detect() {
	metrics, err := detect.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		panic(err)
	}
	d := detect.New(detect.Config{
		Timeout:   10 * time.Second,
		Direction: detect.Outbound,
		Metrics:   metrics,
		Logger:    zap.NewNop(),
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	ctx := context.Background()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			res, conn, err := d.Detect(ctx, c)
			if err != nil { // ctx is done: the proxy is shutting down
				conn.Close()
				return
			}
			switch res.Protocol {
			case detect.HTTP1, detect.HTTP2:
				// serve HTTP on conn: it replays the peeked bytes
			default:
				// proxy conn as opaque TCP; res.SNI and res.ALPN label
				// metrics when the client speaks TLS
			}
			conn.Close()
		}()
	}
}
