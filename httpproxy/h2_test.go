package httpproxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/net/http2"

	"github.com/seed722d2a70/meshproxy/internal/header"
)

// Request and response trailers cross the relay after their bodies, and
// the grpc-status of the response trailers labels the metrics.
func TestH2RelayTrailers(t *testing.T) {
	up := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		_, _ = w.Write(append(body, []byte(" / "+r.Trailer.Get("X-Req-Sum"))...))
		w.Header().Set("Grpc-Status", "7")
	}), 0)
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	req, _ := http.NewRequest(http.MethodPost, "http://svc.example/", io.MultiReader(strings.NewReader("body")))
	req.Header.Set("Content-Type", "application/grpc")
	req.Trailer = http.Header{"X-Req-Sum": {"abc"}}
	resp, err := h2cClient(t, rl.addr).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "body / abc" {
		t.Errorf("body %q: the upstream did not get the request body and trailer", body)
	}
	if got := resp.Trailer.Get("Grpc-Status"); got != "7" {
		t.Errorf("response trailer grpc-status %q, want 7", got)
	}
	n := testutil.ToFloat64(rl.m.responses.WithLabelValues("inbound", "svc.example", "true", "", "", "", "", "", "200", "7", "failure"))
	if n != 1 {
		t.Errorf("responses with grpc_status 7 = %v, want 1", n)
	}
}

// A client's RST_STREAM reaches the upstream (its handler's context ends),
// and an upstream's reaches the client with its error code.
func TestH2RelayResetsBothWays(t *testing.T) {
	t.Run("client resets", func(t *testing.T) {
		canceled := make(chan struct{})
		up := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
				close(canceled)
			case <-time.After(10 * time.Second):
			}
		}), 0)
		rl := startH2Relay(t, up, Config{Direction: "inbound"})
		c := dialRawH2(t, rl.addr)
		c.get(1, "/hold")
		if c.next(isType[*http2.MetaHeadersFrame]) == nil {
			t.Fatal("no response headers")
		}
		if err := c.fr.WriteRSTStream(1, http2.ErrCodeCancel); err != nil {
			t.Fatal(err)
		}
		select {
		case <-canceled:
		case <-time.After(5 * time.Second):
			t.Fatal("the upstream's request was not canceled")
		}
		waitForCount(t, rl.m.responses.WithLabelValues("inbound", "svc.example", "true", "", "", "", "", "", "200", "", "failure"), 1)
		if n := testutil.ToFloat64(rl.m.responses.WithLabelValues("inbound", "svc.example", "true", "", "", "", "", "", "200", "", "failure")); n != 1 {
			t.Errorf("a response cut short by the client counted %v failures, want 1", n)
		}
	})
	t.Run("upstream resets", func(t *testing.T) {
		up := rawH2Server(t, nil, func(u *rawH2) {
			f := u.next(isType[*http2.MetaHeadersFrame])
			if f != nil {
				_ = u.fr.WriteRSTStream(f.Header().StreamID, http2.ErrCodeEnhanceYourCalm)
			}
			u.next(func(http2.Frame) bool { return false })
		})
		rl := startH2Relay(t, up, Config{Direction: "inbound"})
		c := dialRawH2(t, rl.addr)
		c.get(1, "/")
		f, _ := c.next(isType[*http2.RSTStreamFrame]).(*http2.RSTStreamFrame)
		if f == nil || f.StreamID != 1 || f.ErrCode != http2.ErrCodeEnhanceYourCalm {
			t.Fatalf("client got %v, want RST_STREAM 1 ENHANCE_YOUR_CALM", f)
		}
	})
}

// A client that does not read stops the upstream's writes after the
// windows on the way are full: the relay holds one stream window, not the
// whole answer. Once the client reads, everything arrives intact.
func TestH2RelayBackpressureFromSlowReader(t *testing.T) {
	const total = 8 << 20
	var written atomic.Int64
	want := make([]byte, total)
	_, _ = rand.Read(want)
	up := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for off := 0; off < total; off += 16 << 10 {
			n, err := w.Write(want[off : off+16<<10])
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}), 0)
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr) // windows of 65 535 bytes, never updated yet
	c.get(1, "/big")

	// Wait for the upstream's writes to stop.
	var last int64 = -1
	for i := 0; i < 100; i++ {
		time.Sleep(50 * time.Millisecond)
		n := written.Load()
		if n == last && n > 0 {
			break
		}
		last = n
	}
	// The client's 64 KiB, the relay's stream window, and what the
	// upstream's own server buffers before blocking.
	if bound := int64(65535 + h2StreamWindow + 512<<10); last > bound || last <= 0 {
		t.Fatalf("the upstream wrote %d bytes to a client that reads nothing, want at most %d", last, bound)
	}

	if err := c.fr.WriteWindowUpdate(0, total); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteWindowUpdate(1, total); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	c.next(func(f http2.Frame) bool {
		d, ok := f.(*http2.DataFrame)
		if ok {
			got.Write(d.Data())
		}
		return ok && d.StreamEnded()
	})
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("the client got %d bytes, want the %d the upstream wrote, intact", got.Len(), total)
	}
}

// More concurrent streams than the upstream takes on one connection go on
// more connections, each within the upstream's MAX_CONCURRENT_STREAMS.
func TestH2RelayStreamLimitOpensConnections(t *testing.T) {
	const streams, limit = 10, 2
	var (
		mu      sync.Mutex
		perConn = map[string]int{}
		maxSeen int
		arrived = make(chan struct{}, streams)
		release = make(chan struct{})
	)
	up := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		perConn[r.RemoteAddr]++
		maxSeen = max(maxSeen, perConn[r.RemoteAddr])
		mu.Unlock()
		arrived <- struct{}{}
		<-release
		mu.Lock()
		perConn[r.RemoteAddr]--
		mu.Unlock()
	}), limit)
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	client := h2cClient(t, rl.addr)
	errs := make(chan error, streams)
	for i := range streams {
		go func() {
			resp, err := client.Get("http://svc.example/" + strconv.Itoa(i))
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = io.ErrUnexpectedEOF
				}
			}
			errs <- err
		}()
	}
	for range streams {
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("not every stream reached the upstream at once")
		}
	}
	mu.Lock()
	conns := len(perConn)
	mu.Unlock()
	close(release)
	for range streams {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if maxSeen > limit {
		t.Errorf("%d streams at once on one upstream connection, over its limit of %d", maxSeen, limit)
	}
	if conns < streams/limit {
		t.Errorf("%d upstream connections for %d streams at %d each, want %d", conns, streams, limit, streams/limit)
	}
}

// An upstream's GOAWAY: the stream it processed completes, a bodyless
// request it did not is sent again on a new connection, and one with a
// body is refused to the client (REFUSED_STREAM, which clients retry).
func TestH2RelayUpstreamGoAway(t *testing.T) {
	var conns atomic.Int32
	first := make(chan struct{})
	up := rawH2Server(t, nil, func(u *rawH2) {
		n := conns.Add(1)
		answer := func(id uint32) {
			u.headers(id, true, ":status", "200", "x-conn", strconv.Itoa(int(n)))
		}
		if n > 1 {
			u.next(func(f http2.Frame) bool {
				if h, ok := f.(*http2.MetaHeadersFrame); ok {
					answer(h.StreamID)
				}
				return false
			})
			return
		}
		var ids []uint32
		u.next(func(f http2.Frame) bool {
			if h, ok := f.(*http2.MetaHeadersFrame); ok {
				ids = append(ids, h.StreamID)
				if len(ids) == 1 {
					close(first)
				}
			}
			return len(ids) == 3
		})
		if len(ids) < 3 {
			return
		}
		_ = u.fr.WriteGoAway(ids[0], http2.ErrCodeNo, nil)
		answer(ids[0])
		u.next(func(http2.Frame) bool { return false })
	})
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr)
	c.get(1, "/processed")
	<-first // so that it is the upstream's first stream
	c.get(3, "/bodyless")
	c.headers(5, false, ":method", "POST", ":scheme", "http", ":authority", "svc.example", ":path", "/with-body")
	_ = c.fr.WriteData(5, false, []byte("part"))

	got := map[uint32]string{}
	c.next(func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			got[f.StreamID] = headerField(f, ":status") + " conn " + headerField(f, "x-conn")
		case *http2.RSTStreamFrame:
			got[f.StreamID] = "reset " + f.ErrCode.String()
		}
		return len(got) == 3
	})
	want := map[uint32]string{1: "200 conn 1", 3: "200 conn 2", 5: "reset REFUSED_STREAM"}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("stream %d: %q, want %q", id, got[id], w)
		}
	}
}

// Shutdown sends GOAWAY, lets the stream in flight finish, then closes.
func TestH2RelayShutdownSendsGoAway(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	up := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
		_, _ = io.WriteString(w, "finished")
	}), 0)
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr)
	c.get(1, "/slow")
	<-arrived
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- rl.srv.Shutdown(ctx)
	}()
	ga, _ := c.next(isType[*http2.GoAwayFrame]).(*http2.GoAwayFrame)
	if ga == nil || ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 1 {
		t.Fatalf("got %v, want GOAWAY NO_ERROR with last stream 1", ga)
	}
	close(release)
	var body []byte
	end := c.next(func(f http2.Frame) bool {
		d, ok := f.(*http2.DataFrame)
		if ok {
			body = append(body, d.Data()...)
		}
		return ok && d.StreamEnded()
	})
	if end == nil || string(body) != "finished" {
		t.Errorf("stream in flight got %q, want it finished", body)
	}
	if c.next(func(http2.Frame) bool { return false }) != nil {
		t.Error("connection not closed")
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// Header blocks larger than a frame cross in HEADERS and CONTINUATION
// frames both ways.
func TestH2RelayLargeHeaders(t *testing.T) {
	big := strings.Repeat("x", 100<<10)
	up := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big-Back", r.Header.Get("X-Big")+"!")
		w.WriteHeader(http.StatusOK)
	}), 0)
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	req, _ := http.NewRequest(http.MethodGet, "http://svc.example/", nil)
	req.Header.Set("X-Big", big)
	resp, err := h2cClient(t, rl.addr).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Big-Back") != big+"!" {
		t.Errorf("response header of %d bytes, want the %d-byte request header and !", len(resp.Header.Get("X-Big-Back")), len(big))
	}
}

// Frames that break the protocol end the client's connection with GOAWAY
// and the matching code, counted and logged; the relay goes on serving.
func TestH2RelayMalformedFramesAreConnectionErrors(t *testing.T) {
	up := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), 0)
	tests := []struct {
		name string
		send func(c *rawH2)
		code http2.ErrCode
	}{
		{"DATA on stream 0", func(c *rawH2) { _ = c.fr.WriteRawFrame(http2.FrameData, 0, 0, []byte("x")) }, http2.ErrCodeProtocol},
		{"frame over the max size", func(c *rawH2) { _ = c.fr.WriteRawFrame(http2.FrameData, 0, 1, make([]byte, h2BigFrame+1)) }, http2.ErrCodeFrameSize},
		{"HEADERS opening an even stream", func(c *rawH2) { c.get(2, "/") }, http2.ErrCodeProtocol},
		{"undecodable header block", func(c *rawH2) {
			_ = c.fr.WriteRawFrame(http2.FrameHeaders, http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream, 1, []byte{0xff, 0xff, 0xff, 0xff})
		}, http2.ErrCodeCompression},
		{"zero window increment", func(c *rawH2) { _ = c.fr.WriteWindowUpdate(0, 0) }, http2.ErrCodeProtocol},
		{"CONTINUATION without HEADERS", func(c *rawH2) { _ = c.fr.WriteContinuation(1, true, []byte{0x82}) }, http2.ErrCodeProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.InfoLevel)
			rl := startH2Relay(t, up, Config{Direction: "inbound", Log: zap.New(core)})
			c := dialRawH2(t, rl.addr)
			tt.send(c)
			ga, _ := c.next(isType[*http2.GoAwayFrame]).(*http2.GoAwayFrame)
			if ga == nil || ga.ErrCode != tt.code {
				t.Fatalf("got %v, want GOAWAY %v", ga, tt.code)
			}
			if c.next(func(http2.Frame) bool { return false }) != nil {
				t.Error("connection not closed")
			}
			waitForCount(t, rl.m.h2errors.WithLabelValues("inbound", "src", tt.code.String()), 1)
			if n := testutil.ToFloat64(rl.m.h2errors.WithLabelValues("inbound", "src", tt.code.String())); n != 1 {
				t.Errorf("http2_connection_errors_total{code=%v} = %v, want 1", tt.code, n)
			}
			if logs.FilterMessage("HTTP/2 connection error from client").Len() != 1 {
				t.Errorf("logged %v", logs.All())
			}
			// The next client is served.
			resp, err := h2cClient(t, rl.addr).Get("http://svc.example/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		})
	}
}

// An upstream that cannot be reached: gRPC calls get a trailers-only
// UNAVAILABLE, other requests 502, both naming the proxy in
// meshproxy-error, counted and logged once each.
func TestH2RelayUpstreamUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	core, logs := observer.New(zapcore.InfoLevel)
	rl := startH2Relay(t, closed, Config{Direction: "outbound", Log: zap.New(core)})
	client := h2cClient(t, rl.addr)
	start := time.Now()

	req, _ := http.NewRequest(http.MethodPost, "http://svc.example/pkg.Svc/Call", strings.NewReader("\x00\x00\x00\x00\x00"))
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "14" || resp.Header.Get(ErrorHeader) != ReasonUnreachable {
		t.Errorf("gRPC: %s, grpc-status %q, %s %q; want 200, 14, %q", resp.Status, resp.Header.Get("Grpc-Status"),
			ErrorHeader, resp.Header.Get(ErrorHeader), ReasonUnreachable)
	}

	resp, err = client.Get("http://svc.example/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get(ErrorHeader) != ReasonUnreachable || string(body) != "meshproxy: unreachable\n" {
		t.Errorf("HTTP: %s %q, %s %q", resp.Status, body, ErrorHeader, resp.Header.Get(ErrorHeader))
	}
	const more = 8
	for range more {
		if resp, err := client.Get("http://svc.example/"); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	elapsed := time.Since(start)
	if n := testutil.ToFloat64(rl.m.errors.WithLabelValues("outbound", ReasonUnreachable)); n != 2+more {
		t.Errorf("http_proxy_errors_total{reason=unreachable} = %v, want %d", n, 2+more)
	}
	// The metric counts every failure; the log says it at most once a
	// second per reason, as the HTTP/1 relay does.
	lines := logs.FilterMessage("request failed").All()
	if most := int(elapsed/time.Second) + 1; len(lines) == 0 || len(lines) > most {
		t.Errorf("logged %d failed requests of %d in %v, want 1 to %d", len(lines), 2+more, elapsed, most)
	}
	for _, l := range lines {
		if r := l.ContextMap()["reason"]; r != ReasonUnreachable {
			t.Errorf("request failed with reason %v, want %s", r, ReasonUnreachable)
		}
	}
}

// A body whose END_STREAM comes in an empty DATA frame right behind its
// last bytes, as net/http's client ends a streamed body, reaches the
// upstream with one END_STREAM and nothing after it: a second one is
// answered with RST_STREAM STREAM_CLOSED, which the client would get. The
// empty frame needs no window, so it also passes a window the last bytes
// used up.
func TestH2RelayEndStreamBehindLastBytesSentOnce(t *testing.T) {
	tests := []struct {
		name   string
		window uint32 // the upstream's stream window
	}{
		{"joined with the last bytes", 65535},
		{"at zero window", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type seen struct {
				body  string
				ended bool
				after []http2.Frame // on the stream after END_STREAM
			}
			observe := func(u *rawH2) (s seen) {
				_ = u.c.SetDeadline(time.Now().Add(3 * time.Second))
				var id uint32
				if u.next(func(f http2.Frame) bool {
					switch f := f.(type) {
					case *http2.MetaHeadersFrame:
						id = f.StreamID
					case *http2.DataFrame:
						s.body += string(f.Data())
						return f.StreamEnded()
					}
					return false
				}) == nil {
					return s
				}
				s.ended = true
				s.after, _ = u.framesBeforePong(id, nil)
				u.headers(id, true, ":status", "200")
				return s
			}
			got := make(chan seen, 1)
			up := rawH2Server(t, []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: tt.window}}, func(u *rawH2) {
				got <- observe(u)
				u.next(func(http2.Frame) bool { return false })
			})
			rl := startH2Relay(t, up, Config{Direction: "inbound"})
			c := dialRawH2(t, rl.addr)
			c.atOnce(func() {
				c.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "svc.example", ":path", "/upload")
				_ = c.fr.WriteData(1, false, []byte("abc"))
				_ = c.fr.WriteData(1, true, nil)
			})
			s := <-got
			if !s.ended || s.body != "abc" {
				t.Fatalf("the upstream got %q, END_STREAM %v; want \"abc\" and END_STREAM", s.body, s.ended)
			}
			if len(s.after) > 0 {
				t.Errorf("the upstream got %v after END_STREAM", s.after)
			}
			h, _ := c.next(isType[*http2.MetaHeadersFrame]).(*http2.MetaHeadersFrame)
			if h == nil || headerField(h, ":status") != "200" {
				t.Errorf("client got %v, want the 200", h)
			}
		})
	}
}

// Once the upstream resets a stream, or refuses it, the body still queued
// for it behind the upstream's window is dropped, not sent after the
// RST_STREAM when the window opens; the client gets the reset.
func TestH2RelayNoDataAfterUpstreamReset(t *testing.T) {
	for _, code := range []http2.ErrCode{http2.ErrCodeCancel, http2.ErrCodeRefusedStream} {
		t.Run(code.String(), func(t *testing.T) {
			type seen struct {
				ok    bool
				after []http2.Frame // on the stream after its RST_STREAM
			}
			observe := func(u *rawH2) (s seen) {
				_ = u.c.SetDeadline(time.Now().Add(3 * time.Second))
				var id uint32
				n := 0
				if u.next(func(f http2.Frame) bool {
					switch f := f.(type) {
					case *http2.MetaHeadersFrame:
						id = f.StreamID
					case *http2.DataFrame:
						n += len(f.Data())
					}
					return n >= 10
				}) == nil {
					return s
				}
				// The rest of the body waits in the relay for window, which
				// opens after the reset. The relay writes what the window
				// lets out in the flush that carries its SETTINGS ACK, so
				// the PING goes after that ACK.
				_ = u.fr.WriteRSTStream(id, code)
				_ = u.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
				s.after, s.ok = u.framesBeforePong(id, func(f http2.Frame) bool {
					sf, ok := f.(*http2.SettingsFrame)
					return ok && sf.IsAck()
				})
				return s
			}
			got := make(chan seen, 1)
			up := rawH2Server(t, []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 10}}, func(u *rawH2) {
				got <- observe(u)
				u.next(func(http2.Frame) bool { return false })
			})
			rl := startH2Relay(t, up, Config{Direction: "inbound"})
			c := dialRawH2(t, rl.addr)
			c.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "svc.example", ":path", "/upload")
			_ = c.fr.WriteData(1, false, make([]byte, 100))
			s := <-got
			if !s.ok {
				t.Fatal("the upstream's PING was not answered")
			}
			if len(s.after) > 0 {
				t.Errorf("the upstream got %v after its RST_STREAM", s.after)
			}
			rst, _ := c.next(isType[*http2.RSTStreamFrame]).(*http2.RSTStreamFrame)
			if rst == nil || rst.StreamID != 1 || rst.ErrCode != code {
				t.Errorf("client got %v, want RST_STREAM 1 %v", rst, code)
			}
		})
	}
}

// A stream the relay gives up on without answering (its dial was
// canceled) is reset to the client, which would otherwise wait forever.
func TestH2RelayCanceledUnansweredStreamIsReset(t *testing.T) {
	s, _, _ := startServer(t, Config{Direction: "outbound"})
	pool := NewH2Pool(TransportConfig{Dial: func(context.Context) (net.Conn, error) {
		return nil, context.Canceled
	}})
	addr := serveOne(t, s, &Conn{Protocol: header.HTTP2, H2: pool, Labels: Labels{Direction: "outbound"}})
	c := dialRawH2(t, addr)
	_ = c.c.SetDeadline(time.Now().Add(3 * time.Second))
	c.get(1, "/")
	rst, _ := c.next(isType[*http2.RSTStreamFrame]).(*http2.RSTStreamFrame)
	if rst == nil || rst.StreamID != 1 || rst.ErrCode != http2.ErrCodeCancel {
		t.Errorf("client got %v, want RST_STREAM 1 CANCEL", rst)
	}
}
