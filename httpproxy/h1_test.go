package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/seed722d2a70/meshproxy/internal/header"
	"github.com/seed722d2a70/meshproxy/internal/tcptest"
)

// scriptedApp serves HTTP/1 requests with answer's raw response, closing
// the connection after it when answer says so. It counts the connections
// it accepted.
func scriptedApp(t *testing.T, answer func(r *http.Request) (raw string, closeAfter bool)) (string, *atomic.Int32) {
	t.Helper()
	var conns atomic.Int32
	addr := tcptest.Serve(t, func(c net.Conn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, r.Body)
			raw, closeAfter := answer(r)
			if _, err := io.WriteString(c, raw); err != nil || closeAfter {
				return
			}
		}
	})
	return addr, &conns
}

// relay is a Server relaying HTTP/1 to one upstream through a pool.
type relay struct {
	addr string
	m    *Metrics
	pool *Pool
	logs *observer.ObservedLogs
	s    *Server
}

func startRelay(t *testing.T, app string, tcfg TransportConfig) *relay {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	s, m, _ := startServer(t, Config{Direction: "outbound", Log: zap.New(core)})
	var ps Pools[string]
	t.Cleanup(ps.CloseIdle)
	tcfg.Dial = dialTo(app)
	pool := ps.Get(app, time.Now(), func() *http.Transport { return NewTransport(tcfg) })
	info := &Conn{Protocol: header.HTTP1, H1: pool, Upstream: app, Labels: Labels{Direction: "outbound", TLS: "true"}}
	return &relay{addr: serveOne(t, s, info), m: m, pool: pool, logs: logs, s: s}
}

func (r *relay) responses(status, class string) float64 {
	return testutil.ToFloat64(r.m.responses.WithLabelValues("outbound", "svc", "true", "", "", "", "", "", status, "", class))
}

// clientConn is a raw client connection to the relay, failing the test
// rather than hanging it.
func clientConn(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func readResponse(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return resp, string(body)
}

// wantClosed checks that the relay closed the client connection.
func wantClosed(t *testing.T, br *bufio.Reader) {
	t.Helper()
	if b, err := br.ReadByte(); err != io.EOF {
		t.Errorf("client connection still open: read %q, %v", b, err)
	}
}

// The relay frames each response by its framing and keeps the client's
// connection and its own pooled connection to the app when the exchange
// leaves them clean: a second request on the same client connection is
// answered, over the same app connection.
func TestRelayResponseFraming(t *testing.T) {
	tests := []struct {
		name   string
		method string
		answer string
		early  int // an informational status relayed first
		body   string
		check  func(t *testing.T, resp *http.Response)
	}{
		{name: "content-length", method: "GET", answer: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", body: "hello"},
		{name: "chunked with trailers", method: "GET",
			answer: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: abc\r\n\r\n",
			body:   "hello world",
			check: func(t *testing.T, resp *http.Response) {
				if len(resp.TransferEncoding) != 1 || resp.Trailer.Get("X-Sum") != "abc" {
					t.Errorf("transfer encoding %v, trailer %v; want chunked, X-Sum: abc", resp.TransferEncoding, resp.Trailer)
				}
			}},
		{name: "HEAD with a length and no body", method: "HEAD", answer: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
			check: func(t *testing.T, resp *http.Response) {
				if resp.ContentLength != 5 {
					t.Errorf("Content-Length %d, want 5", resp.ContentLength)
				}
			}},
		{name: "204", method: "GET", answer: "HTTP/1.1 204 No Content\r\n\r\n"},
		{name: "304 with a length", method: "GET", answer: "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"},
		{name: "1xx before the answer", method: "GET", answer: "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", early: 103, body: "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, conns := scriptedApp(t, func(r *http.Request) (string, bool) {
				if r.URL.Path == "/second" {
					return "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond", false
				}
				return tt.answer, false
			})
			r := startRelay(t, app, TransportConfig{})
			c, br := clientConn(t, r.addr)
			_, _ = io.WriteString(c, tt.method+" / HTTP/1.1\r\nHost: svc\r\n\r\n")
			if tt.early != 0 {
				if resp, _ := readResponse(t, br, tt.method); resp.StatusCode != tt.early || resp.Header.Get("Link") != "</a>" {
					t.Errorf("first answer %s %v, want %d with its Link", resp.Status, resp.Header, tt.early)
				}
			}
			resp, body := readResponse(t, br, tt.method)
			if body != tt.body {
				t.Errorf("body %q, want %q", body, tt.body)
			}
			if tt.check != nil {
				tt.check(t, resp)
			}
			_, _ = io.WriteString(c, "GET /second HTTP/1.1\r\nHost: svc\r\n\r\n")
			if _, body := readResponse(t, br, "GET"); body != "second" {
				t.Errorf("second answer %q on the same connection", body)
			}
			if n := conns.Load(); n != 1 {
				t.Errorf("the app accepted %d connections, want 1 (reused)", n)
			}
		})
	}
}

// Exchanges that leave a connection in an unknown state end it: a body
// until close ends the client's connection after it, an HTTP/1.0 client
// gets a chunked body unchunked and its connection closed, and an app
// connection with bytes past the answer's end is not pooled.
func TestRelayClosesWhatAnExchangeLeavesUnclean(t *testing.T) {
	t.Run("close-delimited body", func(t *testing.T) {
		app, _ := scriptedApp(t, func(*http.Request) (string, bool) {
			return "HTTP/1.1 200 OK\r\n\r\nuntil the end", true
		})
		r := startRelay(t, app, TransportConfig{})
		c, br := clientConn(t, r.addr)
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
		resp, body := readResponse(t, br, "GET")
		if body != "until the end" || !resp.Close {
			t.Errorf("body %q, close %v; want %q and Connection: close", body, resp.Close, "until the end")
		}
		wantClosed(t, br)
	})
	t.Run("HTTP/1.0 client, chunked answer", func(t *testing.T) {
		app, _ := scriptedApp(t, func(*http.Request) (string, bool) {
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false
		})
		r := startRelay(t, app, TransportConfig{})
		c, br := clientConn(t, r.addr)
		_, _ = io.WriteString(c, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		got, _ := io.ReadAll(br)
		if !strings.HasSuffix(string(got), "\r\n\r\nabc") || strings.Contains(string(got), "chunked") {
			t.Errorf("HTTP/1.0 client got %q, want the data unchunked and the end of the connection", got)
		}
	})
	t.Run("bytes past the answer", func(t *testing.T) {
		app, conns := scriptedApp(t, func(*http.Request) (string, bool) {
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", false
		})
		r := startRelay(t, app, TransportConfig{})
		c, br := clientConn(t, r.addr)
		for range 2 {
			_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
			if _, body := readResponse(t, br, "GET"); body != "ok" {
				t.Fatalf("body %q", body)
			}
		}
		if n := conns.Load(); n != 2 {
			t.Errorf("the app accepted %d connections, want 2: one that read past an answer must not be reused", n)
		}
	})
}

// A response the app cuts short (less body than its Content-Length) is
// counted as a failure, logged, and the client's connection closed so it
// sees the truncation.
func TestRelayShortBodyIsFailure(t *testing.T) {
	app, _ := scriptedApp(t, func(*http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", true
	})
	r := startRelay(t, app, TransportConfig{})
	c, br := clientConn(t, r.addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("reading the body: %v, want unexpected EOF", err)
	}
	waitForCount(t, r.m.responses.WithLabelValues("outbound", "svc", "true", "", "", "", "", "", "200", "", "failure"), 1)
	if n := r.responses("200", "failure"); n != 1 {
		t.Errorf("failed responses = %v, want 1", n)
	}
	if r.logs.FilterMessage("response cut short").Len() != 1 {
		t.Errorf("logs %v, want one %q", r.logs.All(), "response cut short")
	}
}

// A client that leaves in the middle of a response body costs the relay
// its app connection too: it is closed, not pooled half read.
func TestRelayClientGoneMidBodyClosesAppConn(t *testing.T) {
	appClosed := make(chan struct{})
	release := make(chan struct{})
	app := tcptest.Serve(t, func(c net.Conn) {
		defer close(appClosed)
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nfirst part")
		<-release
		for {
			if _, err := c.Write(make([]byte, 64<<10)); err != nil {
				return // the relay closed its connection
			}
		}
	})
	r := startRelay(t, app, TransportConfig{})
	c, br := clientConn(t, r.addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	close(release)
	select {
	case <-appClosed:
	case <-time.After(10 * time.Second):
		t.Fatal("the app connection stayed open after the client left mid-body")
	}
	waitForCount(t, r.m.responses.WithLabelValues("outbound", "svc", "true", "", "", "", "", "", "200", "", "failure"), 1)
	if n := r.pool.h1.idleLen(); n != 0 {
		t.Errorf("%d idle app connections, want 0", n)
	}
}

// Pipelined requests are answered in order, each by the app.
func TestRelayPipelinedRequests(t *testing.T) {
	app, conns := scriptedApp(t, func(r *http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n" + r.URL.Path[1:], false
	})
	r := startRelay(t, app, TransportConfig{})
	c, br := clientConn(t, r.addr)
	_, _ = io.WriteString(c, "GET /a1 HTTP/1.1\r\nHost: svc\r\n\r\nPOST /b2 HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\nxyzGET /c3 HTTP/1.1\r\nHost: svc\r\n\r\n")
	for _, want := range []string{"a1", "b2", "c3"} {
		if _, body := readResponse(t, br, "GET"); body != want {
			t.Errorf("answer %q, want %q", body, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("the app accepted %d connections, want 1", n)
	}
}

// An app that closes its idle connections (without saying so) does not
// fail requests: the relay finds out before reusing one.
func TestRelayAppClosingIdleConns(t *testing.T) {
	app, conns := scriptedApp(t, func(*http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true
	})
	r := startRelay(t, app, TransportConfig{})
	c, br := clientConn(t, r.addr)
	for i := range 3 {
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
		resp, body := readResponse(t, br, "GET")
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %s %q", i, resp.Status, body)
		}
		time.Sleep(20 * time.Millisecond) // the app's close reaches the relay
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("the app accepted %d connections, want 3", n)
	}
	if n := r.responses("200", "success"); n != 3 {
		t.Errorf("successful responses = %v, want 3", n)
	}
}

// Pooled app connections are closed after the idle timeout, and when the
// pool is told to close its idle ones.
func TestRelayPoolClosesIdleConns(t *testing.T) {
	appClosed := make(chan struct{}, 2)
	app := tcptest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				appClosed <- struct{}{}
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	for _, tt := range []struct {
		name    string
		idle    time.Duration
		closeFn func(*relay)
	}{
		{"idle timeout", 100 * time.Millisecond, func(*relay) {}},
		{"CloseIdle", time.Hour, func(r *relay) { r.pool.closeIdle() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := startRelay(t, app, TransportConfig{IdleTimeout: tt.idle})
			c, br := clientConn(t, r.addr)
			_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
			readResponse(t, br, "GET")
			tt.closeFn(r)
			select {
			case <-appClosed:
			case <-time.After(5 * time.Second):
				t.Fatal("the idle app connection was not closed")
			}
			if n := r.pool.h1.idleLen(); n != 0 {
				t.Errorf("%d idle connections left", n)
			}
		})
	}
}

// Request heads the relay will not forward are answered with the reason,
// counted and logged, and the connection closed.
func TestRelayRefusesBadHeads(t *testing.T) {
	app, conns := scriptedApp(t, func(*http.Request) (string, bool) { return "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false })
	tests := []struct {
		name   string
		req    string
		status int
		reason string
	}{
		{"oversized head", "GET / HTTP/1.1\r\nHost: svc\r\nX-Big: " + strings.Repeat("a", maxHeadBytes) + "\r\n\r\n", 431, ReasonHeadTooLarge},
		{"space before colon", "GET / HTTP/1.1\r\nHost: svc\r\nX-Bad : 1\r\n\r\n", 400, ReasonBadRequest},
		{"two lengths", "POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400, ReasonBadRequest},
		{"length and chunked", "POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, ReasonBadRequest},
		{"unknown transfer coding", "POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: gzip\r\n\r\n", 501, ReasonBadRequest},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400, ReasonBadRequest},
		{"HTTP/2.0 line", "GET / HTTP/2.0\r\nHost: svc\r\n\r\n", 505, ReasonBadRequest},
		{"too many fields", "GET / HTTP/1.1\r\nHost: svc\r\n" + strings.Repeat("X: 1\r\n", maxHeadFields) + "\r\n", 431, ReasonHeadTooLarge},
		{"too many Connection tokens", "GET / HTTP/1.1\r\nHost: svc\r\nConnection: " + strings.Repeat("a,", maxConnTokens) + "b\r\n\r\n", 400, ReasonBadRequest},
		{"userinfo in Host", "GET / HTTP/1.1\r\nHost: user:secret@svc\r\n\r\n", 400, ReasonBadRequest},
		{"userinfo in the target", "GET http://user:secret@svc/x HTTP/1.1\r\nHost: svc\r\n\r\n", 400, ReasonBadRequest},
		{"userinfo in a CONNECT target", "CONNECT user@svc:443 HTTP/1.1\r\nHost: svc:443\r\n\r\n", 400, ReasonBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRelay(t, app, TransportConfig{})
			got, err := exchangeRaw(t, r.addr, tt.req)
			if err != nil && len(got) == 0 {
				t.Fatalf("no answer: %v", err)
			}
			resp, rerr := http.ReadResponse(bufio.NewReader(strings.NewReader(string(got))), nil)
			if rerr != nil {
				t.Fatalf("answer %q: %v", got, rerr)
			}
			if resp.StatusCode != tt.status || resp.Header.Get(ErrorHeader) != tt.reason || !resp.Close {
				t.Errorf("%s, %s %q, close %v; want %d %q and Connection: close", resp.Status, ErrorHeader, resp.Header.Get(ErrorHeader), resp.Close, tt.status, tt.reason)
			}
			if n := testutil.ToFloat64(r.m.errors.WithLabelValues("outbound", tt.reason)); n != 1 {
				t.Errorf("http_proxy_errors_total{reason=%q} = %v, want 1", tt.reason, n)
			}
			if r.logs.FilterMessage("request refused").Len() != 1 {
				t.Errorf("logs %v, want one %q", r.logs.All(), "request refused")
			}
		})
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("the app accepted %d connections for requests that were refused", n)
	}
}

// countingLease counts what the relay tells an Upstream about a request.
type countingLease struct{ responded, done atomic.Int32 }

func (l *countingLease) Responded() { l.responded.Add(1) }
func (l *countingLease) Done()      { l.done.Add(1) }

type leasingUpstream struct {
	pool  *Pool
	lease *countingLease
}

func (u leasingUpstream) Conn(ctx context.Context, hasBody bool) (*UpstreamConn, Lease, error) {
	c, _, err := u.pool.Conn(ctx, hasBody)
	return c, u.lease, err
}

// A request's lease learns of its response head, and is released once the
// response body has ended, not before.
func TestRelayLeaseHeldUntilBodyEnds(t *testing.T) {
	release := make(chan struct{})
	app := tcptest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
		<-release
		_, _ = io.WriteString(c, "cd")
		_, _ = io.Copy(io.Discard, c)
	})
	s, _, _ := newServer(t, "outbound")
	var ps Pools[string]
	t.Cleanup(ps.CloseIdle)
	pool := ps.Get(app, time.Now(), func() *http.Transport { return NewTransport(TransportConfig{Dial: dialTo(app)}) })
	lease := &countingLease{}
	addr := serveOne(t, s, &Conn{Protocol: header.HTTP1, H1: leasingUpstream{pool, lease}, Upstream: app})
	c, br := clientConn(t, addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r, d := lease.responded.Load(), lease.done.Load(); r != 1 || d != 0 {
		t.Errorf("with the body under way: responded %d, done %d; want 1, 0", r, d)
	}
	close(release)
	if body, _ := io.ReadAll(io.LimitReader(resp.Body, 4)); string(body) != "abcd" {
		t.Fatalf("body %q", body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for lease.done.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if r, d := lease.responded.Load(), lease.done.Load(); r != 1 || d != 1 {
		t.Errorf("after the body: responded %d, done %d; want 1, 1", r, d)
	}
}

// Shutdown closes an idle relay connection at once and stops taking new
// ones.
func TestRelayShutdownClosesIdleConns(t *testing.T) {
	app, _ := scriptedApp(t, func(*http.Request) (string, bool) { return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false })
	r := startRelay(t, app, TransportConfig{})
	c, br := clientConn(t, r.addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	readResponse(t, br, "GET")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	wantClosed(t, br)
	_, br2 := clientConn(t, r.addr)
	wantClosed(t, br2)
}

// After a failed connect the HTTP/1 pool waits before dialing again, as
// the HTTP/2 pool does (TestH2DialBackoff): requests meanwhile fail at
// once with the same answer, and a success ends the wait.
func TestRelayDialBackoff(t *testing.T) {
	dead := closedAddr(t)
	live, _ := scriptedApp(t, func(*http.Request) (string, bool) { return "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false })
	var to atomic.Pointer[string]
	to.Store(&dead)
	var dials atomic.Int32
	s, m, _ := startServer(t, Config{Direction: "outbound"})
	var ps Pools[string]
	t.Cleanup(ps.CloseIdle)
	pool := ps.Get("app", time.Now(), func() *http.Transport {
		return NewTransport(TransportConfig{Dial: countingDial(&to, &dials)})
	})
	pool.h1.backoff, pool.h1.maxBackoff = time.Hour, time.Hour // none ends in the test
	addr := serveOne(t, s, &Conn{Protocol: header.HTTP1, H1: pool, Upstream: "app", Labels: Labels{Direction: "outbound"}})
	c, br := clientConn(t, addr)
	get := func() (int, string) {
		t.Helper()
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
		resp, _ := readResponse(t, br, "GET")
		return resp.StatusCode, resp.Header.Get(ErrorHeader)
	}
	wantDialBackoff(t, get, &dials, m, "outbound")

	// The backoff over, the upstream back: a success resets it.
	to.Store(&live)
	pool.h1.mu.Lock()
	pool.h1.retryAt = time.Time{}
	pool.h1.mu.Unlock()
	if code, _ := get(); code != http.StatusOK {
		t.Fatalf("got %d once the upstream is back, want 200", code)
	}
	pool.h1.mu.Lock()
	failures := pool.h1.failures
	pool.h1.mu.Unlock()
	if n := dials.Load(); n != dialBackoffAfter+1 || failures != 0 {
		t.Errorf("%d dials, %d failures in a row; want %d and 0", n, failures, dialBackoffAfter+1)
	}
}

// When the connection's context ends (a shutdown's grace period is over),
// a request waiting for an upstream that does not answer ends too: the
// relay closes the upstream conn along with the client's, and ServeConn
// returns without waiting for the answer.
func TestRelayContextEndClosesUpstream(t *testing.T) {
	// Closed before the cleanups, which wait for the app's handler.
	release := make(chan struct{})
	defer close(release)
	reading := make(chan struct{}, 1)
	app := tcptest.Serve(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		reading <- struct{}{}
		<-release
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	})
	s, _, _ := newServer(t, "outbound")
	var ps Pools[string]
	t.Cleanup(ps.CloseIdle)
	pool := ps.Get(app, time.Now(), func() *http.Transport { return NewTransport(TransportConfig{Dial: dialTo(app)}) })
	info := &Conn{Protocol: header.HTTP1, H1: pool, Upstream: app, Labels: Labels{Direction: "outbound", TLS: "true"}}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	returned := make(chan struct{})
	addr := tcptest.Serve(t, func(c net.Conn) {
		s.ServeConn(ctx, c, info)
		close(returned)
	})
	c, _ := clientConn(t, addr)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-reading
	cancel()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("ServeConn still waits for the upstream's answer after its context ended")
	}
}
