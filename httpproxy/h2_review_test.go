package httpproxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/seed722d2a70/meshproxy/internal/header"
)

// pingPong sends a PING and waits for its ACK: the relay has read
// everything sent before it.
func (r *rawH2) pingPong() bool {
	r.t.Helper()
	_ = r.fr.WritePing(false, [8]byte{9, 9})
	return r.next(func(f http2.Frame) bool {
		p, ok := f.(*http2.PingFrame)
		return ok && p.IsAck() && p.Data == [8]byte{9, 9}
	}) != nil
}

// relayStream finds stream id of the relay's only client connection.
func (rl *h2relay) stream(t *testing.T, id uint32) *h2stream {
	t.Helper()
	rl.srv.h2.mu.Lock()
	defer rl.srv.h2.mu.Unlock()
	for d := range rl.srv.h2.m {
		if s := d.lookup(id); s != nil {
			return s
		}
	}
	t.Fatalf("no stream %d in the relay", id)
	return nil
}

// Review #1: each 1-byte DATA frame used to pin a pooled 16 KiB buffer
// while it waited for the upstream's window (4096 frames: 64 MiB). Queued
// payloads of a stream now share buffers, and what they pin is counted.
func TestH2TinyDataFramesShareBuffers(t *testing.T) {
	up := rawH2Server(t, []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 0}}, func(u *rawH2) {
		u.next(func(http2.Frame) bool { return false }) // never opens a window
	})
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr)
	c.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "svc.example", ":path", "/upload")
	if !c.pingPong() {
		t.Fatal("no pong")
	}
	const frames = 4096
	c.atOnce(func() {
		for range frames {
			_ = c.fr.WriteData(1, false, []byte{'x'})
		}
	})
	if !c.pingPong() {
		t.Fatal("no pong")
	}
	s := rl.stream(t, 1)
	// The writer may not have taken the last batch yet: a few buffers.
	if held := s.held.Load(); held <= 0 || held > 4*(h2BigFrame+h2ItemCost) {
		t.Errorf("%d one-byte frames pin %d bytes", frames, held)
	}
}

// pipeH2 serves one relayed client connection over a pipe: the relay's
// writer blocks as soon as the client does not read.
func pipeH2(t *testing.T) (*rawH2, *Metrics) {
	t.Helper()
	s, m, _ := startServer(t, Config{Direction: "inbound"})
	pool := NewH2Pool(TransportConfig{Dial: dialTo("127.0.0.1:1")})
	t.Cleanup(pool.CloseIdle)
	cli, srv := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeConn(t.Context(), srv, &Conn{Protocol: header.HTTP2, H2: pool, Labels: Labels{Direction: "inbound"}})
	}()
	t.Cleanup(func() { _ = cli.Close(); <-done })
	return newRawH2(t, cli), m
}

// waitCalm waits until the relay has counted a connection error
// ENHANCE_YOUR_CALM from the client, and reports whether it did.
func waitCalm(m *Metrics) bool {
	c := m.h2errors.WithLabelValues("inbound", "src", http2.ErrCodeEnhanceYourCalm.String())
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if testutil.ToFloat64(c) > 0 {
			return true
		}
	}
	return false
}

// goAwayCode reads what the relay wrote until its GOAWAY, whose code it
// returns; false if the connection ended without one.
func goAwayCode(r *rawH2) (http2.ErrCode, bool) {
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return 0, false
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			return g.ErrCode, true
		}
	}
}

// floodUnread writes the preface, then frame(i) for i < n, from a
// goroutine (the pipe blocks each write until the relay reads it) as a
// client that reads nothing, until a write fails.
func floodUnread(r *rawH2, n int, frame func(fr *http2.Framer, i int) error) {
	fr := http2.NewFramer(r.c, nil) // the test's reader keeps r.fr
	go func() {
		if _, err := io.WriteString(r.c, http2.ClientPreface); err != nil || fr.WriteSettings() != nil {
			return
		}
		for i := range n {
			if frame(fr, i) != nil {
				return
			}
		}
	}()
}

// Review #2: a client that sends frames the relay answers with a reset
// (here HEADERS without :path) and reads nothing made the relay queue the
// answers without bound. Past h2MaxControl queued the relay now stops
// reading and ends the connection with GOAWAY ENHANCE_YOUR_CALM.
func TestH2UnreadResetsEndConnection(t *testing.T) {
	r, m := pipeH2(t)
	r.hbuf.Reset()
	_ = r.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
	_ = r.enc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "http"})
	block := bytes.Clone(r.hbuf.Bytes()) // static table only: the same every time
	floodUnread(r, 100*h2MaxControl, func(fr *http2.Framer, i int) error {
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: block, EndStream: true, EndHeaders: true})
	})
	if !waitCalm(m) {
		t.Fatal("the relay kept reading a client that reads nothing")
	}
	if code, ok := goAwayCode(r); !ok || code != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("GOAWAY %v (%v), want ENHANCE_YOUR_CALM", code, ok)
	}
}

// Review #2: each SETTINGS frame kept all its entries until answered; a
// 64 KiB frame holds ~10 900. More than h2MaxSettings is a connection
// error now.
func TestH2SettingsWithTooManyEntries(t *testing.T) {
	r, _ := pipeH2(t)
	ss := make([]http2.Setting, h2MaxSettings+1)
	for i := range ss {
		ss[i] = http2.Setting{ID: http2.SettingHeaderTableSize, Val: uint32(i)}
	}
	floodUnread(r, 1, func(fr *http2.Framer, _ int) error { return fr.WriteSettings(ss...) })
	if code, ok := goAwayCode(r); !ok || code != http2.ErrCodeProtocol {
		t.Errorf("GOAWAY %v (%v), want PROTOCOL_ERROR", code, ok)
	}
}

// Review #9: a request the framer rejects as a stream error (an uppercase
// header name) was reset without recording its ID, so the DATA the client
// had already sent on it was "DATA on an idle stream", and the connection
// with its other streams was torn down.
func TestH2DataAfterRejectedHeadersIgnored(t *testing.T) {
	up := h2cServer(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), 0)
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr)
	c.atOnce(func() {
		c.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "svc.example", ":path", "/", "X-Upper", "1")
		_ = c.fr.WriteData(1, true, []byte("body"))
	})
	c.get(3, "/after")
	var got []string
	c.next(func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			got = append(got, fmt.Sprintf("RST %d %v", f.StreamID, f.ErrCode))
		case *http2.GoAwayFrame:
			got = append(got, "GOAWAY "+f.ErrCode.String())
			return true
		case *http2.MetaHeadersFrame:
			got = append(got, fmt.Sprintf("HEADERS %d %s", f.StreamID, headerField(f, ":status")))
			return f.StreamID == 3
		}
		return false
	})
	if want := []string{"RST 1 PROTOCOL_ERROR", "HEADERS 3 200"}; !slices.Equal(got, want) {
		t.Errorf("client got %v, want %v", got, want)
	}
}

// crossGoAway reads frames until the connection ends, as a peer whose
// frames cross the GOAWAY: it sends a PING when the GOAWAY comes and
// another once the read has ended (the peer has not closed yet). It
// returns whether a GOAWAY came, the read error that ended the reading
// and the first write error.
func crossGoAway(fr *http2.Framer) (goAway bool, rerr, werr error) {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			rerr = err
			break
		}
		if _, ok := f.(*http2.GoAwayFrame); ok && !goAway {
			goAway = true
			werr = fr.WritePing(false, [8]byte{1})
		}
	}
	// What arrives at a closed socket is answered with RST, and the
	// write after that fails.
	time.Sleep(20 * time.Millisecond)
	if err := fr.WritePing(false, [8]byte{2}); werr == nil {
		werr = err
	}
	return goAway, rerr, werr
}

// Review #6: the idle close sent GOAWAY and closed the socket at once; a
// client whose frames crossed the GOAWAY (keep-alive PINGs) got a TCP RST,
// which can also drop the GOAWAY it had not read.
func TestH2IdleCloseLingers(t *testing.T) {
	up := h2cServer(t, nil, 0)
	rl := startH2Relay(t, up, Config{Direction: "inbound", IdleTimeout: 100 * time.Millisecond})
	c := dialRawH2(t, rl.addr)
	goAway, rerr, werr := crossGoAway(c.fr)
	if !goAway || !errors.Is(rerr, io.EOF) || werr != nil {
		t.Errorf("idle close: GOAWAY %v, read ended with %v, writes with %v; want a GOAWAY, EOF and no write error", goAway, rerr, werr)
	}
}

// Review #6: the same for a pooled upstream connection closed as idle.
func TestH2UpstreamIdleCloseLingers(t *testing.T) {
	type result struct {
		goAway     bool
		rerr, werr error
	}
	res := make(chan result, 1)
	up := rawH2Server(t, nil, func(u *rawH2) {
		f := u.next(isType[*http2.MetaHeadersFrame])
		if f == nil {
			return
		}
		u.headers(f.Header().StreamID, true, ":status", "200")
		var r result
		r.goAway, r.rerr, r.werr = crossGoAway(u.fr)
		res <- r
	})
	s, _, _ := startServer(t, Config{Direction: "inbound"})
	pool := NewH2Pool(TransportConfig{Dial: dialTo(up), IdleTimeout: 100 * time.Millisecond})
	t.Cleanup(pool.CloseIdle)
	addr := serveOne(t, s, &Conn{Protocol: header.HTTP2, H2: pool, Labels: Labels{Direction: "inbound"}})
	c := dialRawH2(t, addr)
	c.get(1, "/")
	if c.next(isType[*http2.MetaHeadersFrame]) == nil {
		t.Fatal("no answer")
	}
	select {
	case r := <-res:
		if !r.goAway || !errors.Is(r.rerr, io.EOF) || r.werr != nil {
			t.Errorf("upstream: GOAWAY %v, read ended with %v, writes with %v; want a GOAWAY, EOF and no write error", r.goAway, r.rerr, r.werr)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pooled connection not closed")
	}
}

// Review #5: a request without a body that the upstream refused
// (REFUSED_STREAM) was sent again at once, forever: thousands of times a
// second. It is sent at most h2MaxRefusals more times, then answered 503.
func TestH2RefusedStreamRetriedBoundedly(t *testing.T) {
	var headers atomic.Int32
	up := rawH2Server(t, nil, func(u *rawH2) {
		u.next(func(f http2.Frame) bool {
			if h, ok := f.(*http2.MetaHeadersFrame); ok {
				headers.Add(1)
				_ = u.fr.WriteRSTStream(h.StreamID, http2.ErrCodeRefusedStream)
			}
			return false
		})
	})
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr)
	c.get(1, "/")
	f, _ := c.next(func(f http2.Frame) bool { return f.Header().StreamID == 1 }).(*http2.MetaHeadersFrame)
	if f == nil || headerField(f, ":status") != "503" || headerField(f, ErrorHeader) != ReasonBadGateway {
		t.Fatalf("answer %v, want 503 %s", f, ReasonBadGateway)
	}
	if n := headers.Load(); n != 1+h2MaxRefusals {
		t.Errorf("the upstream got the request %d times, want %d", n, 1+h2MaxRefusals)
	}
}

// Review #3: rapid reset (CVE-2023-44487): a client opening and resetting
// streams in a loop put every one of them on the shared upstream and was
// never told to stop. Past h2ResetBurst such resets it gets GOAWAY
// ENHANCE_YOUR_CALM.
func TestH2RapidResetGoAway(t *testing.T) {
	rl := startH2Relay(t, h2cServer(t, nil, 0), Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr)
	c.get(1, "/") // the pool has a connection: streams go upstream at once
	if c.next(isType[*http2.MetaHeadersFrame]) == nil {
		t.Fatal("no answer")
	}
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	for i := range h2ResetBurst + 500 {
		id := uint32(2*i + 3)
		c.hbuf.Reset()
		for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "svc.example"}, {":path", "/"}} {
			_ = c.enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndStream: true, EndHeaders: true})
		_ = fr.WriteRSTStream(id, http2.ErrCodeCancel)
	}
	go func() { _, _ = c.c.Write(buf.Bytes()) }() // fails once the relay closes
	g, _ := c.next(isType[*http2.GoAwayFrame]).(*http2.GoAwayFrame)
	if g == nil || g.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("GOAWAY %v, want ENHANCE_YOUR_CALM", g)
	}
}

// Review #4: after a complete response the upstream ended the stream
// (RST_STREAM NO_ERROR, as net/http's server does when the handler did
// not read the body) or closed its connection; the relay forgot the
// stream while its body still waited for the client's window, so the
// client's WINDOW_UPDATEs were dropped and the response never completed.
func TestH2ResponseCompletesAfterUpstreamEnds(t *testing.T) {
	for _, mode := range []string{"rst-no-error", "upstream-closes"} {
		t.Run(mode, func(t *testing.T) {
			const size = 13 * 16 << 10 // 13 frames, over the client's 64 KiB window
			up := rawH2Server(t, nil, func(u *rawH2) {
				f := u.next(isType[*http2.MetaHeadersFrame])
				if f == nil {
					return
				}
				id := f.Header().StreamID
				u.headers(id, false, ":status", "200")
				chunk := make([]byte, 16<<10)
				for sent := 0; sent < size; sent += len(chunk) {
					_ = u.fr.WriteData(id, sent+len(chunk) >= size, chunk)
				}
				if mode == "rst-no-error" {
					_ = u.fr.WriteRSTStream(id, http2.ErrCodeNo)
					u.next(func(http2.Frame) bool { return false })
				} // else return, closing the connection
			})
			rl := startH2Relay(t, up, Config{Direction: "inbound"})
			c := dialRawH2(t, rl.addr)
			_ = c.c.SetDeadline(time.Now().Add(5 * time.Second))
			c.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "svc.example", ":path", "/")
			got := 0
			end := c.next(func(f http2.Frame) bool {
				d, ok := f.(*http2.DataFrame)
				if !ok {
					return false
				}
				got += len(d.Data())
				if n := len(d.Data()); n > 0 {
					_ = c.fr.WriteWindowUpdate(0, uint32(n))
					_ = c.fr.WriteWindowUpdate(1, uint32(n))
				}
				return d.StreamEnded()
			})
			if end == nil || got != size {
				t.Errorf("client got %d of %d bytes, END_STREAM %v", got, size, end != nil)
			}
		})
	}
}

// Review #7: an upstream announcing MAX_CONCURRENT_STREAMS 0 made the
// pool dial in a loop (about 2000 connections a second, all kept). The
// connection that takes no stream is closed and the request answered.
func TestH2ZeroMaxStreamsNoDialLoop(t *testing.T) {
	var conns atomic.Int32
	up := rawH2Server(t, []http2.Setting{{ID: http2.SettingMaxConcurrentStreams, Val: 0}}, func(u *rawH2) {
		conns.Add(1)
		u.next(func(http2.Frame) bool { return false })
	})
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr)
	c.get(1, "/")
	f, _ := c.next(isType[*http2.MetaHeadersFrame]).(*http2.MetaHeadersFrame)
	if f == nil || headerField(f, ":status") != "502" {
		t.Fatalf("answer %v, want 502", f)
	}
	rl.pool.mu.Lock()
	pooled := len(rl.pool.conns)
	rl.pool.mu.Unlock()
	if n := conns.Load(); n != 1 || pooled != 0 {
		t.Errorf("%d connections dialed, %d pooled; want 1 and 0", n, pooled)
	}
}

// Review #8: a request body that disagrees with its content-length was
// forwarded (RFC 9113, 8.1.1: malformed, must not be). The stream is reset
// both ways before its END_STREAM goes on.
func TestH2RequestContentLengthMismatchReset(t *testing.T) {
	upGot := make(chan string, 1)
	up := rawH2Server(t, nil, func(u *rawH2) {
		u.next(func(f http2.Frame) bool {
			switch f := f.(type) {
			case *http2.RSTStreamFrame:
				upGot <- "RST " + f.ErrCode.String()
				return true
			case *http2.DataFrame:
				if f.StreamEnded() {
					upGot <- "END_STREAM"
					return true
				}
			}
			return false
		})
		u.next(func(http2.Frame) bool { return false })
	})
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr)
	c.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "svc.example", ":path", "/", "content-length", "100")
	_ = c.fr.WriteData(1, true, []byte("short"))
	r, _ := c.next(isType[*http2.RSTStreamFrame]).(*http2.RSTStreamFrame)
	if r == nil || r.ErrCode != http2.ErrCodeProtocol {
		t.Errorf("client got %v, want RST_STREAM PROTOCOL_ERROR", r)
	}
	// The stream may have been reset before it reached the upstream.
	_ = c.pingPong()
	select {
	case got := <-upGot:
		if got != "RST PROTOCOL_ERROR" {
			t.Errorf("upstream got %s, want RST PROTOCOL_ERROR or nothing", got)
		}
	case <-time.After(100 * time.Millisecond):
	}
}

// Review #8: the same for a response, which the client must not get whole.
func TestH2ResponseContentLengthMismatchReset(t *testing.T) {
	up := rawH2Server(t, nil, func(u *rawH2) {
		f := u.next(isType[*http2.MetaHeadersFrame])
		if f == nil {
			return
		}
		u.headers(f.Header().StreamID, false, ":status", "200", "content-length", "10")
		_ = u.fr.WriteData(f.Header().StreamID, true, []byte("short"))
		u.next(func(http2.Frame) bool { return false })
	})
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr)
	c.get(1, "/")
	var got []string
	c.next(func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.DataFrame:
			got = append(got, fmt.Sprintf("DATA %d end=%v", len(f.Data()), f.StreamEnded()))
			return f.StreamEnded()
		case *http2.RSTStreamFrame:
			got = append(got, "RST "+f.ErrCode.String())
			return true
		}
		return false
	})
	if !slices.Equal(got, []string{"RST PROTOCOL_ERROR"}) {
		t.Errorf("client got %v, want only RST PROTOCOL_ERROR after the headers", got)
	}
}

// Review #8: :path and :method were not checked.
func TestH2BadPathOrMethodRefused(t *testing.T) {
	rl := startH2Relay(t, h2cServer(t, nil, 0), Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr)
	c.headers(1, true, ":method", "GET", ":scheme", "http", ":authority", "svc.example", ":path", "noslash")
	c.headers(3, true, ":method", "G T", ":scheme", "http", ":authority", "svc.example", ":path", "/")
	for _, id := range []uint32{1, 3} {
		r, _ := c.next(isType[*http2.RSTStreamFrame]).(*http2.RSTStreamFrame)
		if r == nil || r.StreamID != id || r.ErrCode != http2.ErrCodeProtocol {
			t.Errorf("stream %d: got %v, want RST_STREAM PROTOCOL_ERROR", id, r)
		}
	}
}
