package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/internal/duplex"
	"github.com/seed722d2a70/meshproxy/internal/header"
	"github.com/seed722d2a70/meshproxy/internal/ratelog"
)

// Config configures a Server.
type Config struct {
	// Direction is the direction label of the metrics: "inbound" or
	// "outbound".
	Direction string
	// ReadHeaderTimeout bounds how long a client may take to send a
	// request's headers; 0 means 30 s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes client connections idle that long; 0 means 5 min.
	IdleTimeout time.Duration
	// WriteTimeout bounds each write of the HTTP/2 relay to a client: one
	// that takes none of it for that long has its connection closed; 0
	// means 10 s.
	WriteTimeout time.Duration
	// Copy configures the raw copy of CONNECT tunnels.
	Copy    duplex.Options
	Metrics *Metrics
	// Log names the direction already, as the proxies' loggers do: the
	// server adds no field its caller knows, which zap would write twice.
	Log *zap.Logger
}

// Conn is what a Server needs to know about one connection: where its
// requests go and how they are labelled.
type Conn struct {
	// Transport forwards the connection's requests. It is normally shared
	// by every connection to the same upstream, so upstream connections
	// are pooled.
	Transport http.RoundTripper
	// Upstream is the host:port requests are sent to, as the URL host.
	// The Host header is the client's.
	Upstream string
	// Labels label the connection's requests; Authority is filled in per
	// request and ServerID from the upstream connection when it has one
	// (see WithPeerID).
	Labels Labels
	// Tunnel opens a raw connection to the upstream for a CONNECT
	// request; nil answers CONNECT with 405.
	Tunnel func(ctx context.Context) (net.Conn, error)
	// Protocol is what the client speaks, as its caller found out:
	// header.HTTP1 connections are served by the HTTP/1 relay (through
	// H1); header.HTTP2 ones with H2 set are relayed frame by frame
	// (see serveH2); the others go through net/http (through Transport),
	// which also tells HTTP/1 from h2c by itself.
	Protocol header.SessionProtocol
	// H1 lends the HTTP/1 relay its upstream connections.
	H1 Upstream
	// H2 chooses the upstream of each stream of a relayed HTTP/2
	// connection; nil leaves HTTP/2 to net/http (the proxy's fallback:
	// config.Config.HTTP2Relay false).
	H2 H2Picker
	// Refuse, when not empty, answers every request 403 with this reason
	// (e.g. the peer may not reach the port): refusing at the HTTP level
	// tells the client why, where closing the connection would look like
	// a network failure.
	Refuse string
}

// Server serves HTTP/1.1 and prior-knowledge HTTP/2 on the connections
// handed to ServeConn and forwards every request. Create one with New;
// stop it with Shutdown.
type Server struct {
	cfg  Config
	log  *zap.Logger
	srv  *http.Server
	ln   *handoff
	rp   *httputil.ReverseProxy
	done chan struct{}

	// The HTTP/1 relay's connections, and its pools: bufio readers and
	// writers for both sides, body copy buffers.
	h1               h1Conns
	readers, writers sync.Pool
	bufs             sync.Pool
	// One "request refused" and one "request failed" line a second per
	// reason from the HTTP/1 relay, and one a second per reason from the
	// HTTP/2 relay (h2FailedLog): bad requests come in floods, and one
	// protocol's failures do not hide the other's.
	refusedLog, failedLog, h2FailedLog *ratelog.Keyed
	// The HTTP/2 relay's connections and frame buffers.
	h2     h2conns
	h2bufs *h2bufs
}

// New returns a running Server.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = 30 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = h2FlushTimeout
	}
	s := &Server{cfg: cfg, log: cfg.Log, ln: newHandoff(), done: make(chan struct{}), h2bufs: newH2Bufs(),
		refusedLog: ratelog.NewKeyed(time.Second), failedLog: ratelog.NewKeyed(time.Second),
		h2FailedLog: ratelog.NewKeyed(time.Second)}
	s.readers.New = func() any { return bufio.NewReader(nil) }
	s.writers.New = func() any { return bufio.NewWriter(nil) }
	s.bufs.New = func() any { b := make([]byte, 32<<10); return &b }
	s.rp = s.reverseProxy()
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	s.srv = &http.Server{
		Handler:   http.HandlerFunc(s.serveHTTP),
		Protocols: &protos,
		// net/http announces 1 MB frames, and an HTTP/2 client (the peer
		// proxy's transport) then holds a 512 KB write buffer for each
		// streaming request body (a gRPC stream) for the stream's life.
		// The relay's frame size bounds that to 64 KB (issue #18).
		HTTP2:             &http.HTTP2Config{MaxReadFrameSize: h2BigFrame},
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if sc, ok := c.(*servedConn); ok {
				ctx = context.WithValue(ctx, connKey{}, sc.info)
			}
			return ctx
		},
		ErrorLog: zap.NewStdLog(cfg.Log.Named("http").WithOptions(zap.IncreaseLevel(zap.WarnLevel))),
	}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(s.ln)
	}()
	return s
}

// logLimited logs msg with reason unless limit has let one of that reason
// through within the last second; the line then says how many it stands
// for. The metrics keep the exact count.
func (s *Server) logLimited(limit *ratelog.Keyed, msg, reason string, fields ...zap.Field) {
	ok, suppressed := limit.Allow(reason, time.Now())
	if !ok {
		return
	}
	fields = append(fields, zap.String("reason", reason))
	if suppressed > 0 {
		fields = append(fields, zap.Int("suppressed", suppressed))
	}
	s.log.Info(msg, fields...)
}

// ServeConn serves HTTP on conn until the client closes it, the server
// closes it (idle, shut down), or ctx is done. It takes conn over and
// closes it.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn, info *Conn) {
	switch {
	case info.Protocol == header.HTTP1:
		s.serveH1(ctx, conn, info)
		return
	case info.Protocol == header.HTTP2 && info.H2 != nil:
		s.serveH2(ctx, conn, info)
		return
	}
	sc := &servedConn{Conn: conn, info: info, closed: make(chan struct{})}
	if !s.ln.give(sc) {
		_ = conn.Close()
		return
	}
	select {
	case <-sc.closed:
	case <-ctx.Done():
		_ = sc.Close()
	}
}

// Shutdown stops taking connections, tells HTTP/1 clients to close and
// HTTP/2 clients GOAWAY, and waits for in-flight requests until ctx is
// done.
func (s *Server) Shutdown(ctx context.Context) error {
	var h1err error
	var wg sync.WaitGroup
	wg.Go(func() { h1err = s.h1.shutdown(ctx) })
	wg.Go(func() { s.h2.shutdown(ctx) })
	err := s.srv.Shutdown(ctx)
	<-s.done
	wg.Wait()
	return errors.Join(err, h1err)
}

// reader returns a pooled bufio.Reader reading r.
func (s *Server) reader(r io.Reader) *bufio.Reader {
	br := s.readers.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

// writer returns a pooled bufio.Writer writing to w.
func (s *Server) writer(w io.Writer) *bufio.Writer {
	bw := s.writers.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

type connKey struct{}

func connInfo(ctx context.Context) *Conn {
	c, _ := ctx.Value(connKey{}).(*Conn)
	return c
}

// servedConn is a connection being served; closing it (by the HTTP
// server, or after a hijack) ends its ServeConn call.
type servedConn struct {
	net.Conn
	info   *Conn
	once   sync.Once
	closed chan struct{}
}

func (c *servedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

// CloseWrite forwards the half-close of CONNECT tunnels.
func (c *servedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// CloseRead forwards to the wrapped conn.
func (c *servedConn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return errors.ErrUnsupported
}

// handoff is a net.Listener whose connections are handed to it by
// ServeConn rather than accepted from a socket.
type handoff struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newHandoff() *handoff {
	return &handoff{ch: make(chan net.Conn), closed: make(chan struct{})}
}

// give hands c to the server's accept loop; false once the listener is
// closed.
func (l *handoff) give(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *handoff) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *handoff) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *handoff) Addr() net.Addr { return handoffAddr{} }

type handoffAddr struct{}

func (handoffAddr) Network() string { return "handoff" }
func (handoffAddr) String() string  { return "handoff" }
