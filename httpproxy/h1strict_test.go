package httpproxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/seed722d2a70/meshproxy/internal/header"
	"github.com/seed722d2a70/meshproxy/internal/tcptest"
)

// Chunk size lines end with CRLF and nothing else, and their extensions
// hold only what extensions are made of: the lines net/http refuses are
// refused too, so no parser before the relay can be made to read other
// chunks than the relay does.
func TestReadChunkSize(t *testing.T) {
	tests := []struct {
		line string
		size uint64
		ok   bool
	}{
		{"5\r\n", 5, true},
		{"aF\r\n", 0xaf, true},
		{"5 \t\r\n", 5, true},
		{"5;name\r\n", 5, true},
		{"5;a=b; c = \"q \\\" ;\" \r\n", 5, true},
		{"fffffffffffffff\r\n", 0xfffffffffffffff, true},
		{"5\n", 0, false},            // bare LF
		{"5;\n", 0, false},           // bare LF after an extension
		{"5;a\rb\r\n", 0, false},     // CR inside an extension
		{"5\r\r\n", 0, false},        // CR before the CRLF
		{"5 ;a\r\n", 0, false},       // whitespace before ';', as net/http
		{"5;a\x00\r\n", 0, false},    // control byte
		{"5;a@b\r\n", 0, false},      // neither token nor quoted string
		{"5;a=\"open\r\n", 0, false}, // unterminated quoted string
		{"5;a=\"\x01\"\r\n", 0, false},
		{"\r\n", 0, false},
		{"x\r\n", 0, false},
		{"5x\r\n", 0, false},
		{"1000000000000000\r\n", 0, false}, // 16 digits
		{"5\r", 0, false},                  // no LF before EOF
	}
	for _, tt := range tests {
		size, err := readChunkSize(bufio.NewReader(strings.NewReader(tt.line)))
		if (err == nil) != tt.ok || size != tt.size {
			t.Errorf("readChunkSize(%q) = %#x, %v; want %#x, ok %v", tt.line, size, err, tt.size, tt.ok)
		}
	}
}

// The lines of a chunked body after the size lines, the chunk data's end
// and the trailer section, are held to CRLF too, and the trailer section
// to the field limit of a head.
func TestRelayChunkedLineEndings(t *testing.T) {
	many := strings.Repeat("X: 1\r\n", maxHeadFields+1)
	tests := []struct {
		name string
		body string
		ok   bool
	}{
		{"plain", "2\r\nxx\r\n0\r\n\r\n", true},
		{"trailers", "2\r\nxx\r\n0\r\nA: 1\r\nGrpc-Status: 0\r\n\r\n", true},
		{"bare LF ending the trailer section", "2\r\nxx\r\n0\r\n\n", false},
		{"bare LF ending a trailer", "2\r\nxx\r\n0\r\nA: 1\n\r\n", false},
		{"CR inside a trailer", "2\r\nxx\r\n0\r\nA: 1\r2\r\n\r\n", false},
		{"bare LF after chunk data", "2\r\nxx\n0\r\n\r\n", false},
		{"too many trailers", "0\r\n" + many + "\r\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			w := bufio.NewWriter(&out)
			var trailers h1Head
			bc := bodyCopy{dst: w, src: bufio.NewReader(strings.NewReader(tt.body)), bufs: &sync.Pool{New: func() any { b := make([]byte, 64); return &b }}}
			err := bc.chunked(&trailers, false)
			bc.release()
			_ = w.Flush()
			if (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok %v", err, tt.ok)
			}
			if tt.ok && out.String() != tt.body {
				t.Errorf("relayed %q, want it as it came", out.String())
			}
		})
	}
}

// A request that a parser taking only CRLF as a chunk line's end reads as
// one POST carries a second request inside a chunk: the relay must not
// end the chunk line elsewhere and send that second request to the app.
func TestRelayChunkedSmuggling(t *testing.T) {
	smug := "0\r\n\r\nGET /admin HTTP/1.1\r\nHost: svc\r\n\r\n"
	pad := strings.Repeat("a", len(smug))
	tests := []struct{ name, body string }{
		{"bare LF after an extension", fmt.Sprintf("%x;\n%s\r\n%s\r\n0\r\n\r\n", len(smug), pad, smug)},
		{"bare LF after the size", fmt.Sprintf("%x\n%s\r\n%s\r\n0\r\n\r\n", len(smug), pad, smug)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var seen []string
			app, _ := scriptedApp(t, func(r *http.Request) (string, bool) {
				mu.Lock()
				seen = append(seen, r.Method+" "+r.URL.Path)
				mu.Unlock()
				return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
			})
			r := startRelay(t, app, TransportConfig{})
			got, _ := exchangeRaw(t, r.addr, "POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n"+tt.body)
			if n := strings.Count(string(got), "HTTP/1.1 "); n > 1 {
				t.Errorf("the client got %d answers to one request: %q", n, got)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, s := range seen {
				if s == "GET /admin" {
					t.Errorf("the app received a smuggled request: %v", seen)
				}
			}
		})
	}
}

// The limits on the fields of a head: at the limit it is taken, past it
// refused with the status the client gets (the relay answers 502 for an
// upstream's response head it refuses).
func TestHeadLimits(t *testing.T) {
	fields := func(n int) string { return strings.Repeat("X-F: v\r\n", n) }
	tokens := func(n int) string {
		ts := make([]string, n)
		for i := range ts {
			ts[i] = fmt.Sprintf("x-%d", i)
		}
		return "Connection: close, " + strings.Join(ts, ", ") + "\r\n"
	}
	const reqLine, respLine = "GET / HTTP/1.1\r\nHost: a\r\n", "HTTP/1.1 200 OK\r\n"
	tests := []struct {
		name     string
		response bool
		head     string
		status   int // 0: taken
	}{
		{"request fields at the limit", false, reqLine + fields(maxHeadFields-1), 0},
		{"request fields past the limit", false, reqLine + fields(maxHeadFields), http.StatusRequestHeaderFieldsTooLarge},
		{"request tokens at the limit", false, reqLine + tokens(maxConnTokens), 0},
		{"request tokens past the limit", false, reqLine + tokens(maxConnTokens+1), http.StatusBadRequest},
		{"response fields at the limit", true, respLine + fields(maxHeadFields), 0},
		{"response fields past the limit", true, respLine + fields(maxHeadFields+1), http.StatusRequestHeaderFieldsTooLarge},
		{"response tokens past the limit", true, respLine + tokens(maxConnTokens+1), http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h h1Head
			if err := h.read(bufio.NewReader(strings.NewReader(tt.head + "\r\n"))); err != nil {
				t.Fatal(err)
			}
			var err error
			if tt.response {
				err = h.parseResponse()
			} else {
				err = h.parseRequest()
			}
			status := 0
			if he, ok := err.(*headError); ok {
				status = he.status
			} else if err != nil {
				t.Fatalf("error %v is not a headError", err)
			}
			if status != tt.status {
				t.Errorf("status %d (%v), want %d", status, err, tt.status)
			}
		})
	}
}

// After one large head, a connection's reused head lets its buffers go; a
// usual head keeps them, so that steady requests allocate nothing.
func TestHeadShrink(t *testing.T) {
	large := "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X-Big: "+strings.Repeat("v", 500)+"\r\n", maxHeadFields-1) + "\r\n"
	usual := "GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nConnection: x-a, x-b\r\n\r\n"
	tests := []struct {
		name string
		head string
		kept bool
	}{
		{"large", large, false},
		{"usual", usual, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := requestHead(t, tt.head)
			raw, fields := cap(h.raw), cap(h.fields)
			h.shrink()
			if kept := cap(h.raw) == raw && cap(h.fields) == fields; kept != tt.kept {
				t.Errorf("capacities raw %d→%d, fields %d→%d; want kept %v", raw, cap(h.raw), fields, cap(h.fields), tt.kept)
			}
			if cap(h.raw) > keepHeadBytes || cap(h.fields) > keepHeadFields || cap(h.connTokens) > keepConnTokens {
				t.Errorf("after shrink: raw %d, fields %d, tokens %d", cap(h.raw), cap(h.fields), cap(h.connTokens))
			}
		})
	}
}

// A response head from the app past the relay's limits is a 502, counted
// as bad_gateway.
func TestRelayRefusesBadResponseHeads(t *testing.T) {
	app, _ := scriptedApp(t, func(*http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-F: v\r\n", maxHeadFields+1) + "Content-Length: 0\r\n\r\n", false
	})
	r := startRelay(t, app, TransportConfig{})
	c, br := clientConn(t, r.addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	resp, _ := readResponse(t, br, "GET")
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get(ErrorHeader) != ReasonBadGateway {
		t.Errorf("%s, %s %q; want 502 %q", resp.Status, ErrorHeader, resp.Header.Get(ErrorHeader), ReasonBadGateway)
	}
	if n := testutil.ToFloat64(r.m.errors.WithLabelValues("outbound", ReasonBadGateway)); n != 1 {
		t.Errorf("http_proxy_errors_total{reason=%q} = %v, want 1", ReasonBadGateway, n)
	}
}

// An answer the relay sends before reading the request's body, closing
// the connection after it, reaches a client that is still sending the
// body: the relay reads on a while instead of resetting the connection,
// which makes a client such as net/http's fail its write and report that
// rather than the answer.
func TestRelayAnswerBeforeBodyReachesClient(t *testing.T) {
	nobody, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := nobody.Addr().String()
	_ = nobody.Close()
	tests := []struct {
		name   string
		refuse string
		big    bool // a head past maxHeadBytes
		status int
	}{
		{"refused client", "unauthorized", false, http.StatusForbidden},
		{"upstream unreachable", "", false, http.StatusBadGateway},
		{"head too large", "", true, http.StatusRequestHeaderFieldsTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, _ := newServer(t, "outbound")
			var ps Pools[string]
			t.Cleanup(ps.CloseIdle)
			pool := ps.Get(unreachable, time.Now(), func() *http.Transport { return NewTransport(TransportConfig{Dial: dialTo(unreachable)}) })
			addr := serveOne(t, s, &Conn{Protocol: header.HTTP1, H1: pool, Upstream: unreachable, Refuse: tt.refuse,
				Labels: Labels{Direction: "outbound"}})
			body := make([]byte, 4<<20)
			for i := range 20 {
				tr := &http.Transport{}
				req, err := http.NewRequest("POST", "http://"+addr+"/", bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				if tt.big {
					req.Header.Set("X-Big", strings.Repeat("a", maxHeadBytes))
				}
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatalf("request %d: no answer: %v", i, err)
				}
				_ = resp.Body.Close()
				tr.CloseIdleConnections()
				if resp.StatusCode != tt.status {
					t.Errorf("request %d: %s, want %d", i, resp.Status, tt.status)
				}
			}
		})
	}
}

// A failed exchange's grpc-status is its own: a chunked response cut off
// before its trailers does not take the previous response's.
func TestRelayGRPCStatusPerExchange(t *testing.T) {
	n := 0
	app := tcptest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			n++
			if n == 1 {
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nGrpc-Status: 0\r\n\r\n")
				continue
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\npar")
			_ = c.Close()
			return
		}
	})
	r := startRelay(t, app, TransportConfig{})
	c, br := clientConn(t, r.addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	readResponse(t, br, "GET")
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	_, _ = io.ReadAll(br)
	failed := func(grpc string) float64 {
		return testutil.ToFloat64(r.m.responses.WithLabelValues("outbound", "svc", "true", "", "", "", "", "", "200", grpc, "failure"))
	}
	waitForCount(t, r.m.responses.WithLabelValues("outbound", "svc", "true", "", "", "", "", "", "200", "", "failure"), 1)
	if got, stale := failed(""), failed("0"); got != 1 || stale != 0 {
		t.Errorf("cut-off response counted with no grpc_status %v times, with the previous one's %v times; want 1, 0", got, stale)
	}
}

// A client whose request body breaks off while the relay waits for the
// answer is a canceled request, not an upstream timeout.
func TestRelayClientBodyFailureIsNotTimeout(t *testing.T) {
	app := tcptest.Serve(t, func(c net.Conn) {
		_, _ = io.Copy(io.Discard, c) // never answers
	})
	r := startRelay(t, app, TransportConfig{ResponseTimeout: 10 * time.Second})
	for range 5 {
		c, _ := clientConn(t, r.addr)
		_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxx\r\nzz\r\n")
		_, _ = io.ReadAll(c)
	}
	waitForCount(t, r.m.errors.WithLabelValues("outbound", ReasonCanceled), 5)
	if n := testutil.ToFloat64(r.m.errors.WithLabelValues("outbound", ReasonCanceled)); n != 5 {
		t.Errorf("canceled %v, want 5", n)
	}
	if n := testutil.ToFloat64(r.m.errors.WithLabelValues("outbound", ReasonTimeout)); n != 0 {
		t.Errorf("timeouts %v, want 0", n)
	}
}

// A flood of bad requests is logged once a second per reason; the
// metrics count each.
func TestRelayRefusalLogsRateLimited(t *testing.T) {
	r := startRelay(t, "127.0.0.1:1", TransportConfig{})
	for _, req := range []string{
		"GET / HTTP/1.1\r\n\r\n", "GET / HTTP/1.1\r\n\r\n", "GET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: svc\r\n" + strings.Repeat("X: 1\r\n", maxHeadFields) + "\r\n",
	} {
		_, _ = exchangeRaw(t, r.addr, req)
	}
	if n := testutil.ToFloat64(r.m.errors.WithLabelValues("outbound", ReasonBadRequest)); n != 3 {
		t.Errorf("bad_request %v, want 3", n)
	}
	if n := r.logs.FilterMessage("request refused").Len(); n != 2 {
		t.Errorf("%d %q lines, want 2 (one per reason): %v", n, "request refused", r.logs.All())
	}
}

// The first request's head has ReadHeaderTimeout from the connection's
// start, not that long to its first byte and as long again for the rest.
func TestRelayFirstHeadOneBudget(t *testing.T) {
	app, conns := scriptedApp(t, func(*http.Request) (string, bool) { return "HTTP/1.1 204 No Content\r\n\r\n", false })
	s, _, _ := startServer(t, Config{Direction: "outbound", ReadHeaderTimeout: 600 * time.Millisecond})
	var ps Pools[string]
	t.Cleanup(ps.CloseIdle)
	pool := ps.Get(app, time.Now(), func() *http.Transport { return NewTransport(TransportConfig{Dial: dialTo(app)}) })
	addr := serveOne(t, s, &Conn{Protocol: header.HTTP1, H1: pool, Upstream: app, Labels: Labels{Direction: "outbound"}})
	c, br := clientConn(t, addr)
	time.Sleep(400 * time.Millisecond)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\n")
	time.Sleep(400 * time.Millisecond)
	_, _ = io.WriteString(c, "Host: svc\r\n\r\n")
	wantClosed(t, br)
	if n := conns.Load(); n != 0 {
		t.Errorf("a head sent in 800 ms with a 600 ms budget was forwarded")
	}
}

// A CONNECT request goes upstream without framing fields: what follows
// its head is the tunnel's.
func TestWriteRequestHeadConnect(t *testing.T) {
	tests := []struct{ name, head, want string }{
		{"connect", "CONNECT b:443 HTTP/1.1\r\nHost: b:443\r\nContent-Length: 5\r\n\r\n",
			"CONNECT b:443 HTTP/1.1\r\nHost: b:443\r\n\r\n"},
		{"post", "POST / HTTP/1.1\r\nHost: b\r\nContent-Length: 5\r\n\r\n",
			"POST / HTTP/1.1\r\nHost: b\r\nContent-Length: 5\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := requestHead(t, tt.head)
			var out bytes.Buffer
			w := bufio.NewWriter(&out)
			writeRequestHead(w, h, "up:80")
			_ = w.Flush()
			if out.String() != tt.want {
				t.Errorf("wrote %q, want %q", out.String(), tt.want)
			}
		})
	}
}

// requestHead reads and parses head, which must be a valid request head.
func requestHead(t *testing.T, head string) *h1Head {
	t.Helper()
	var h h1Head
	if err := h.read(bufio.NewReader(strings.NewReader(head))); err != nil {
		t.Fatal(err)
	}
	if err := h.parseRequest(); err != nil {
		t.Fatal(err)
	}
	return &h
}
