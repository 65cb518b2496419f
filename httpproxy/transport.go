package httpproxy

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/seed722d2a70/meshproxy/internal/header"
)

// TransportConfig configures an upstream transport.
type TransportConfig struct {
	// Dial opens a connection to the upstream; for a mesh peer, the mTLS
	// connection with its transport header already sent.
	Dial func(ctx context.Context) (net.Conn, error)
	// Protocol is what is spoken on the connections Dial opens:
	// header.HTTP2 for prior-knowledge HTTP/2, anything else HTTP/1.1.
	Protocol header.SessionProtocol
	// ResponseTimeout bounds the wait for a response's headers after the
	// request is sent; 0 waits as long as the client does.
	ResponseTimeout time.Duration
	// IdleTimeout closes pooled connections idle that long; 0 means 90 s.
	IdleTimeout time.Duration
	// WriteTimeout bounds each write of the HTTP/2 relay to an upstream:
	// one that takes none of it for that long has its connection closed,
	// its streams failing as timed out; 0 means 10 s. net/http's
	// transport does not use it.
	WriteTimeout time.Duration
}

// NewTransport returns a pooling transport to one upstream. HTTP/1
// connections are kept alive and reused; HTTP/2 requests are multiplexed
// on as few connections as flow control allows.
func NewTransport(cfg TransportConfig) *http.Transport {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 90 * time.Second
	}
	var protos http.Protocols
	if cfg.Protocol == header.HTTP2 {
		protos.SetUnencryptedHTTP2(true)
	} else {
		protos.SetHTTP1(true)
	}
	return &http.Transport{
		DialContext:           func(ctx context.Context, _, _ string) (net.Conn, error) { return cfg.Dial(ctx) },
		Protocols:             &protos,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       cfg.IdleTimeout,
		ResponseHeaderTimeout: cfg.ResponseTimeout,
		// A proxy must not ask for compression the client did not ask
		// for, nor decompress what it forwards.
		DisableCompression: true,
		// 100-continue: hold the body until the upstream says so, as the
		// client does, for at most this long.
		ExpectContinueTimeout: time.Second,
	}
}
