package httpproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"time"

	"golang.org/x/net/http2"

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
// on as few connections as flow control allows. A Pool sends HTTP/2
// requests through an h2cTransport made from it, not through it.
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

// h2cTransport carries the requests of a prior-knowledge HTTP/2 pool with
// x/net's HTTP/2 transport, which pools and dials its connections itself.
// net/http's Transport must not: it keeps a prior-knowledge HTTP/2
// connection in its idle list stamped with the time of its first use and,
// once IdleConnTimeout has passed since then, dials a new connection for
// the next request however busy the old one is, finds the old one usable
// and closes the new one without reading the app's SETTINGS, which resets
// the app (issue #18). x/net's connections time out only when they carry
// no stream. The response timeout is h2cTransport's own (x/net knows none
// without a net/http Transport); Expect: 100-continue bodies are sent at
// once, which RFC 9110 allows. x/net v0.62's transport is its own only
// before Go 1.27 (or with the http2legacy build tag): from 1.27 it wraps
// net/http's, which would bring the redial back, and
// TestHTTP2TransportKeepsBusyConnection fails then.
type h2cTransport struct {
	t               *http2.Transport
	responseTimeout time.Duration
}

// newH2CTransport returns t's HTTP/2 transport when t speaks only
// prior-knowledge HTTP/2 (NewTransport with header.HTTP2), else nil.
func newH2CTransport(t *http.Transport) *h2cTransport {
	if t.Protocols == nil || !t.Protocols.UnencryptedHTTP2() || t.Protocols.HTTP1() {
		return nil
	}
	return &h2cTransport{
		t: &http2.Transport{
			AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				return t.DialContext(ctx, network, addr)
			},
			IdleConnTimeout:    t.IdleConnTimeout,
			DisableCompression: t.DisableCompression,
		},
		responseTimeout: t.ResponseHeaderTimeout,
	}
}

// RoundTrip sends r, failing with errResponseTimeout when the response's
// headers take longer than the response timeout from the end of the
// request, as net/http's transport counts it: neither the connect nor a
// streamed request body (gRPC client streaming) is part of it.
func (h *h2cTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if h.responseTimeout <= 0 {
		return h.t.RoundTrip(r)
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	rt := &responseTimer{d: h.responseTimeout, expire: func() { cancel(errResponseTimeout) }}
	// x/net calls WroteRequest once the body is sent, possibly after
	// RoundTrip has returned (an early answer): rt ignores it then.
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) { rt.start() },
	})
	resp, err := h.t.RoundTrip(r.WithContext(ctx))
	rt.stop()
	if errors.Is(context.Cause(ctx), errResponseTimeout) {
		// The timer fired: the stream is being cancelled, whatever came.
		if err == nil {
			resp.Body.Close()
		}
		return nil, errResponseTimeout
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	// The stream lives as long as the body: the context ends with it.
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, nil
}

// responseTimer runs expire d after start, unless stop came first.
type responseTimer struct {
	d      time.Duration
	expire func()

	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func (rt *responseTimer) start() {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if !rt.stopped && rt.t == nil {
		rt.t = time.AfterFunc(rt.d, rt.expire)
	}
}

func (rt *responseTimer) stop() {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.stopped = true
	if rt.t != nil {
		rt.t.Stop()
	}
}

// CloseIdleConnections closes the connections carrying no stream.
func (h *h2cTransport) CloseIdleConnections() { h.t.CloseIdleConnections() }

// cancelOnClose ends a response's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel(nil)
	return err
}
