package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"sync"
	"time"

	"go.uber.org/zap"
)

// exchange is what is learned about one request while it is forwarded,
// for its metrics.
type exchange struct {
	start     time.Time
	headersAt time.Time
	status    int
	// resp is the upstream response, for the trailers once its body is
	// done; nil when the proxy answered itself.
	resp       *http.Response
	grpcStatus string
	failed     bool

	mu       sync.Mutex
	serverID string
}

func (ex *exchange) classification() string {
	if ex.failed || ex.status >= 500 || (ex.grpcStatus != "" && ex.grpcStatus != "0") {
		return "failure"
	}
	return "success"
}

type exchangeKey struct{}

func exchangeOf(r *http.Request) *exchange {
	ex, _ := r.Context().Value(exchangeKey{}).(*exchange)
	return ex
}

// serveHTTP forwards one request and counts it.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	info := connInfo(r.Context())
	if info == nil {
		// Only conns given to ServeConn are served.
		http.Error(w, "meshproxy: no route", http.StatusInternalServerError)
		return
	}
	ex := &exchange{start: time.Now()}
	labels := info.Labels
	if info.Refuse == "" {
		// A refused client's Host names nothing it reached: it gets no
		// series of its own.
		labels.Authority = r.Host
	}
	defer func() {
		// ReverseProxy aborts the handler (http.ErrAbortHandler) when the
		// response body cannot be copied to the end: the client got a
		// truncated answer, which is a failure whatever its status.
		aborted := recover()
		if aborted != nil {
			ex.failed = true
			s.log.Info("response cut short",
				zap.String("method", r.Method), authorityField(r.Host), zap.Int("status", ex.status))
		}
		if ex.resp != nil {
			ex.grpcStatus = grpcStatusOf(ex.resp)
		}
		ex.mu.Lock()
		if ex.serverID != "" {
			labels.ServerID = ex.serverID
		}
		ex.mu.Unlock()
		s.cfg.Metrics.record(labels, ex)
		if aborted != nil {
			panic(aborted)
		}
	}()

	switch {
	case info.Refuse != "":
		// One answer is enough: a refused client does not get to hold the
		// connection (HTTP/1 closes it, HTTP/2 sends GOAWAY).
		w.Header().Set("Connection", "close")
		s.fail(w, r, ex, refusal(info.Refuse), nil)
	case r.Method == http.MethodConnect:
		s.tunnel(w, r, ex, info)
	default:
		ctx := context.WithValue(r.Context(), exchangeKey{}, ex)
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			GotConn: func(ci httptrace.GotConnInfo) {
				if id := PeerID(ci.Conn); id != "" {
					ex.mu.Lock()
					ex.serverID = id
					ex.mu.Unlock()
				}
			},
		})
		s.rp.ServeHTTP(continueOnce{w}, r.WithContext(ctx))
	}
}

// grpcStatusOf returns the grpc-status of a finished response: from the
// trailers, or from the headers of a trailers-only response.
func grpcStatusOf(resp *http.Response) string {
	if v := resp.Trailer.Get("Grpc-Status"); v != "" {
		return v
	}
	return resp.Header.Get("Grpc-Status")
}

// reverseProxy builds the one ReverseProxy every request goes through; the
// upstream and transport come with the request's connection.
func (s *Server) reverseProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			info := connInfo(pr.In.Context())
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = info.Upstream
			// Request trailers: the server fills In.Trailer when the body
			// ends, and the transport sends Out.Trailer after the body.
			// Out.Trailer is a copy taken before that, so share the map.
			pr.Out.Trailer = pr.In.Trailer
			// The client's Host header is kept (Rewrite leaves Out.Host
			// as In.Host), and no X-Forwarded-* headers are added: the
			// mesh is transparent to the app.
		},
		Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
			return connInfo(r.Context()).Transport.RoundTrip(r)
		}),
		// No timed flushing: ReverseProxy already flushes every write of a
		// response of unknown length (gRPC streams, chunked downloads,
		// server-sent events), and a timed flush of a body-less response
		// would split a gRPC trailers-only answer into headers and an
		// empty end of stream, which gRPC clients reject.
		FlushInterval: 0,
		BufferPool:    newBufferPool(),
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode < 100 || resp.StatusCode > 599 {
				// net/http's HTTP/2 transport takes any integer, which
				// its server would panic writing, and which would be a
				// status_code series of the upstream's choosing. A bad
				// gateway, as in the relay (parseStatus).
				return fmt.Errorf("%w: %d", errBadStatus, resp.StatusCode)
			}
			if ex := exchangeOf(resp.Request); ex != nil {
				ex.headersAt = time.Now()
				ex.status = resp.StatusCode
				ex.resp = resp
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.fail(w, r, exchangeOf(r), classify(err), err)
		},
		ErrorLog: zap.NewStdLog(s.log.Named("http").WithOptions(zap.IncreaseLevel(zap.WarnLevel))),
	}
}

// fail answers r itself, counting and logging why.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, ex *exchange, f failure, err error) {
	s.cfg.Metrics.proxyError(s.cfg.Direction, f.reason)
	// Only HTTP/2 comes here (--http2-relay=false): its lines share the
	// HTTP/2 relay's limit.
	s.logLimited(s.h2FailedLog, "request failed", f.reason,
		zap.String("method", r.Method), authorityField(r.Host), zap.Int("status", f.status), zap.Error(err))
	ex.failed = true
	ex.resp = nil
	if f.reason == ReasonCanceled {
		// Nobody is listening any more.
		ex.status = 0
		return
	}
	ex.status = f.write(w, r)
	ex.headersAt = time.Now()
	if isGRPC(r) {
		ex.grpcStatus = w.Header().Get("Grpc-Status")
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// bufferPool lends ReverseProxy its copy buffers.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *b.p.Get().(*[]byte) }
func (b *bufferPool) Put(p []byte) { b.p.Put(&p) }

// PeerID returns the peer identity attached to an upstream conn by
// WithPeerID, or "".
func PeerID(c net.Conn) string {
	for c != nil {
		if p, ok := c.(*peerConn); ok {
			return p.id
		}
		u, ok := c.(interface{ Unwrap() net.Conn })
		if !ok {
			return ""
		}
		c = u.Unwrap()
	}
	return ""
}

// WithPeerID attaches the SPIFFE ID of the peer at the other end of an
// upstream conn, so the requests it carries are labelled with it.
func WithPeerID(c net.Conn, id string) net.Conn { return &peerConn{Conn: c, id: id} }

type peerConn struct {
	net.Conn
	id string
}

// Unwrap lets the relay's pool reach the socket (rawConn).
func (c *peerConn) Unwrap() net.Conn { return c.Conn }

// CloseWrite forwards the half-close of CONNECT tunnels.
func (c *peerConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// CloseRead forwards to the wrapped conn.
func (c *peerConn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return errors.ErrUnsupported
}

// continueOnce keeps the upstream's 100 Continue from reaching the client a
// second time. The transport starts sending the body as soon as the
// upstream says 100, which makes our server send its own automatic 100 on
// the first body read, racing ReverseProxy's relay of the upstream's; the
// automatic one alone is sent exactly when the upstream asked for the body.
// Other 1xx responses (103 Early Hints) are relayed.
type continueOnce struct{ http.ResponseWriter }

func (w continueOnce) WriteHeader(code int) {
	if code == http.StatusContinue {
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach Flush, Hijack and the rest.
func (w continueOnce) Unwrap() http.ResponseWriter { return w.ResponseWriter }
