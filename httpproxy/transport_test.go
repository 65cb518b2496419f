package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/seed722d2a70/meshproxy/internal/header"
)

// countingListener counts the connections it accepts and those of them
// the client reset.
type countingListener struct {
	net.Listener
	accepted, resets atomic.Int64
	slowDone         chan struct{} // closed when a "/slow" request's handler returns
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.accepted.Add(1)
	return &resetCountingConn{Conn: c, l: l}, nil
}

type resetCountingConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *resetCountingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if errors.Is(err, syscall.ECONNRESET) {
		c.once.Do(func() { c.l.resets.Add(1) })
	}
	return n, err
}

// startH2CApp serves prior-knowledge HTTP/2: "/hold" sends its headers
// and holds the stream open until the client goes, "/slow" sends nothing
// until then, anything else answers "ok".
func startH2CApp(t *testing.T) *countingListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln, slowDone: make(chan struct{})}
	var slowOnce sync.Once
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hold":
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		case "/read-body":
			n, _ := io.Copy(io.Discard, r.Body)
			_, _ = fmt.Fprintf(w, "read %d", n)
			return
		case "/slow":
			<-r.Context().Done()
			slowOnce.Do(func() { close(cl.slowDone) })
			return
		}
		_, _ = io.WriteString(w, "ok")
	})}
	go func() { _ = srv.Serve(cl) }()
	t.Cleanup(func() { _ = srv.Close() })
	return cl
}

// An HTTP/2 upstream connection that always carries a stream is never
// idle, so the transport must keep using it: net/http's Transport, on a
// prior-knowledge HTTP/2 connection, counts its idle timeout from the
// connection's first use, then dials a new connection for the next
// request, finds the old one still usable and closes the new one unread,
// which resets the app (issue #18: the soak's gRPC app saw a reset about
// every 90 s).
func TestHTTP2TransportKeepsBusyConnection(t *testing.T) {
	const idle = 200 * time.Millisecond
	app := startH2CApp(t)
	get := h2cGetter(t, app, TransportConfig{IdleTimeout: idle})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hold, err := get(ctx, "/hold")
	if err != nil {
		t.Fatal(err)
	} // like a long gRPC stream: the connection is never idle
	defer hold.Body.Close()
	// Requests for several idle timeouts; how many does not matter, only
	// that they go on past the first timeout.
	for start := time.Now(); time.Since(start) < 5*idle; time.Sleep(idle / 10) {
		getOK(t, get)
	}
	if n := app.accepted.Load(); n != 1 {
		t.Errorf("the app accepted %d connections, want 1: the busy connection should carry every request", n)
	}
	if n := app.resets.Load(); n != 0 {
		t.Errorf("the app saw %d connections reset", n)
	}
}

// h2cGetter returns a function that GETs a path of app through a pool
// made by NewTransport for HTTP/2 with cfg, as Pools makes them.
func h2cGetter(t *testing.T, app net.Listener, cfg TransportConfig) func(context.Context, string) (*http.Response, error) {
	cfg.Protocol = header.HTTP2
	cfg.Dial = func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", app.Addr().String())
	}
	pool := newPool(NewTransport(cfg))
	t.Cleanup(pool.closeIdle)
	return func(ctx context.Context, path string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+app.Addr().String()+path, nil)
		if err != nil {
			return nil, err
		}
		if path == "/close-idle" {
			pool.closeIdle()
			req.URL.Path = "/"
		}
		return pool.RoundTrip(req)
	}
}

func getOK(t *testing.T, get func(context.Context, string) (*http.Response, error)) {
	t.Helper()
	resp, err := get(context.Background(), "/")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != "ok" {
		t.Fatalf("body %q, %v", body, err)
	}
}

// The pool's CloseIdle reaches the HTTP/2 connections (Pools drops unused
// pools with it), and the next request dials again.
func TestHTTP2TransportClosesIdleConnections(t *testing.T) {
	app := startH2CApp(t)
	get := h2cGetter(t, app, TransportConfig{})
	getOK(t, get)
	getOK(t, get)
	if n := app.accepted.Load(); n != 1 {
		t.Fatalf("the app accepted %d connections for two requests, want 1", n)
	}
	resp, err := get(context.Background(), "/close-idle")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := app.accepted.Load(); n != 2 {
		t.Errorf("the app accepted %d connections, want 2: closing the idle ones should close the first", n)
	}
}

// The response timeout holds for HTTP/2 too, as a timeout (504, gRPC
// DEADLINE_EXCEEDED), and ends the stream.
func TestHTTP2TransportResponseTimeout(t *testing.T) {
	app := startH2CApp(t)
	get := h2cGetter(t, app, TransportConfig{ResponseTimeout: 100 * time.Millisecond})
	_, err := get(context.Background(), "/slow")
	if !errors.Is(err, errResponseTimeout) {
		t.Fatalf("err %v, want errResponseTimeout", err)
	}
	if f := classify(err); f.reason != ReasonTimeout {
		t.Errorf("classified %+v, want reason %q", f, ReasonTimeout)
	}
	select {
	case <-app.slowDone:
	case <-time.After(10 * time.Second):
		t.Error("the app's handler still runs: the timed-out stream was not reset")
	}
	getOK(t, get) // the connection still serves
}

// The response timeout counts from the end of the request, as net/http's
// transport counts it: a connect or a streamed request body (a gRPC
// client-streaming call) longer than it is no timeout. Timed from the
// start, both failed with 504 (and the connect was cancelled).
func TestHTTP2TransportResponseTimeoutAfterRequest(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for _, tc := range []struct {
		name        string
		dialDelay   time.Duration
		bodyChunks  int
		chunkPeriod time.Duration
	}{
		{name: "slow connect", dialDelay: 3 * timeout},
		{name: "streamed body", bodyChunks: 6, chunkPeriod: timeout / 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := startH2CApp(t)
			pool := newPool(NewTransport(TransportConfig{Protocol: header.HTTP2, ResponseTimeout: timeout,
				Dial: func(ctx context.Context) (net.Conn, error) {
					select {
					case <-time.After(tc.dialDelay):
					case <-ctx.Done():
						return nil, context.Cause(ctx)
					}
					return (&net.Dialer{}).DialContext(ctx, "tcp", app.Addr().String())
				}}))
			t.Cleanup(pool.closeIdle)
			var body io.Reader
			if tc.bodyChunks > 0 {
				pr, pw := io.Pipe()
				go func() {
					for range tc.bodyChunks {
						time.Sleep(tc.chunkPeriod)
						_, _ = pw.Write([]byte("chunk"))
					}
					_ = pw.Close()
				}()
				body = pr
			}
			req, err := http.NewRequest(http.MethodPost, "http://"+app.Addr().String()+"/read-body", body)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := pool.RoundTrip(req)
			if err != nil {
				t.Fatalf("%v (classified %+v), want the app's answer", err, classify(err))
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := fmt.Sprintf("read %d", 5*tc.bodyChunks); err != nil || string(got) != want {
				t.Errorf("body %q, %v; want %q", got, err, want)
			}
		})
	}
}

// The Server's HTTP/2 (on net/http) announces at most the relay's frame
// size: a client's transport holds a write buffer of the announced size,
// up to 512 KB, for each streaming request body (each gRPC stream).
func TestServerHTTP2FrameSizeBounded(t *testing.T) {
	s, _, _ := newServer(t, "inbound")
	app := startH2CApp(t)
	addr := serveOne(t, s, &Conn{Protocol: header.HTTP2, Transport: newPool(NewTransport(TransportConfig{
		Protocol: header.HTTP2,
		Dial: func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", app.Addr().String())
		},
	})), Upstream: app.Addr().String(), Labels: Labels{Direction: "inbound"}})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	settings, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame %v, want SETTINGS", f)
	}
	if size, ok := settings.Value(http2.SettingMaxFrameSize); ok && size > h2BigFrame {
		t.Errorf("SETTINGS_MAX_FRAME_SIZE %d, want at most %d", size, h2BigFrame)
	}
}
