package httpproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
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
// Also while the stream waits for its upstream connection (one that never
// finishes its preface): the frames queued for it then shared no buffer,
// and the held-bytes cap reset the stream whenever the frames came before
// the upstream was ready (a flaky failure, about one run in ten).
func TestH2TinyDataFramesShareBuffers(t *testing.T) {
	for _, tc := range []struct {
		name     string
		upstream func(t *testing.T) string
	}{
		{"upstream window closed", func(t *testing.T) string {
			return rawH2Server(t, []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 0}}, func(u *rawH2) {
				u.next(func(http2.Frame) bool { return false }) // never opens a window
			})
		}},
		{"upstream not ready", silentUpstream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rl := startH2Relay(t, tc.upstream(t), Config{Direction: "inbound"})
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
		})
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
// never told to stop. Reset streams now hold their slots until the
// upstream confirms the reset (TestH2ResetStreamsHoldTheirSlots), and
// streams over the limit wait for one: however fast the client goes, the
// upstream has a bounded number of its streams that it has not confirmed
// ended (an ACK releases the resets written after its PING too, as in
// net/http's transport, hence at most 2 × h2MaxStreams: the slots' streams
// and those resets). The client keeps its connection, as through net/http's
// server: its RST_STREAMs no longer draw on the reset budget, which ended
// healthy clients' connections on a storm of expired deadlines (third
// review, #1; TestH2DeadlineStormKeepsConnection). Before, this test
// expected GOAWAY ENHANCE_YOUR_CALM after h2ResetBurst resets.
func TestH2RapidResetBoundedBySlots(t *testing.T) {
	var headers, peak atomic.Int64
	up := rawH2Server(t, nil, func(u *rawH2) {
		_ = u.c.SetDeadline(time.Time{})
		// The upstream's streams that are open, or reset and not yet
		// confirmed by the ACK of a PING read after the reset.
		live := map[uint32]bool{}
		var reset []uint32
		pump(u, func(f http2.Frame) {
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				headers.Add(1)
				live[f.StreamID] = true
				peak.Store(max(peak.Load(), int64(len(live))))
				u.headers(f.StreamID, false, ":status", "200")
			case *http2.RSTStreamFrame:
				reset = append(reset, f.StreamID)
				// As a busy server: the relay's next PING may go.
				_ = u.fr.WriteData(1, false, []byte{'x'})
			case *http2.PingFrame:
				if !f.IsAck() {
					for _, id := range reset {
						delete(live, id)
					}
					reset = reset[:0]
					_ = u.fr.WritePing(true, f.Data)
				}
			}
		}, nil)
	})
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr)
	_ = c.c.SetDeadline(time.Now().Add(time.Minute))
	c.get(1, "/") // left open
	// Each write opens a round of streams and resets the round before:
	// the relay has sent those upstream, and the client never has more
	// than a round open.
	const round, rounds = 100, 10 * h2ResetBurst / 100
	id := func(r, i int) uint32 { return uint32(3 + 2*(r*round+i)) }
	for r := 0; r <= rounds; r++ {
		var buf bytes.Buffer
		fr := http2.NewFramer(&buf, nil)
		for i := range round {
			if r > 0 {
				_ = fr.WriteRSTStream(id(r-1, i), http2.ErrCodeCancel)
			}
			if r < rounds {
				c.hbuf.Reset()
				for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "svc.example"}, {":path", "/"}} {
					_ = c.enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
				}
				_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id(r, i), BlockFragment: c.hbuf.Bytes(), EndStream: true, EndHeaders: true})
			}
		}
		_ = fr.WritePing(false, [8]byte{5})
		go func() { _, _ = c.c.Write(buf.Bytes()) }() // fails once the relay closes
		f := c.next(func(f http2.Frame) bool {
			p, ok := f.(*http2.PingFrame)
			return isType[*http2.GoAwayFrame](f) || ok && p.IsAck() && p.Data == [8]byte{5}
		})
		if g, ok := f.(*http2.GoAwayFrame); ok || f == nil {
			t.Fatalf("round %d of %d streams opened and reset: connection ended (%v)", r, round, g)
		}
	}
	if !waitFor(func() bool { return rl.heldStreams() == 0 && rl.liveStreams() == 1 }) {
		t.Errorf("%d reset streams still held, %d live", rl.heldStreams(), rl.liveStreams())
	}
	t.Logf("the upstream got %d of %d streams, at most %d at once", headers.Load(), 1+rounds*round, peak.Load())
	if p := peak.Load(); p > 2*h2MaxStreams {
		t.Errorf("the upstream had %d streams open or unconfirmed at once, want at most %d", p, 2*h2MaxStreams)
	}
	if headers.Load() <= 4*h2MaxStreams {
		t.Errorf("the upstream got %d streams: the test did not press on the limit", headers.Load())
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
			// The relay's window toward the upstream, which the upstream
			// fills at once: one byte over the client's window.
			const size = h2UpStreamWindow
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

// pump serves an upstream connection from the calling goroutine: it
// answers SETTINGS, passes every other frame to each, and runs the
// functions sent on do between frames, until the connection ends. A frame
// is valid during its call only.
func pump(u *rawH2, each func(http2.Frame), do <-chan func(*rawH2)) {
	frames, next := make(chan http2.Frame), make(chan struct{})
	go func() {
		defer close(frames)
		for {
			f, err := u.fr.ReadFrame()
			if err != nil {
				return
			}
			frames <- f
			<-next
		}
	}()
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				return
			}
			if sf, ok := f.(*http2.SettingsFrame); ok {
				if !sf.IsAck() {
					_ = u.fr.WriteSettingsAck()
				}
			} else {
				each(f)
			}
			next <- struct{}{}
		case fn := <-do:
			fn(u)
		}
	}
}

// busyUpstream answers every request 200 and leaves it open, and sends
// DATA on the first stream after each reset, as a busy server would: that
// lets the relay's next PING confirm the resets. It counts the requests in
// headers, if not nil.
func busyUpstream(t *testing.T, headers *atomic.Int64) string {
	return rawH2Server(t, nil, func(u *rawH2) {
		pump(u, func(f http2.Frame) {
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				if headers != nil {
					headers.Add(1)
				}
				u.headers(f.StreamID, false, ":status", "200")
			case *http2.RSTStreamFrame:
				_ = u.fr.WriteData(1, false, []byte{'x'})
			case *http2.PingFrame:
				if !f.IsAck() {
					_ = u.fr.WritePing(true, f.Data)
				}
			}
		}, nil)
	})
}

// heldStreams returns the streams of the relay's client connections that
// are reset upstream and not yet confirmed there.
func (rl *h2relay) heldStreams() int {
	rl.srv.h2.mu.Lock()
	defer rl.srv.h2.mu.Unlock()
	n := 0
	for d := range rl.srv.h2.m {
		d.mu.Lock()
		n += d.held
		d.mu.Unlock()
	}
	return n
}

// waitFor polls cond for up to 5 s and reports whether it came true.
func waitFor(cond func() bool) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// Review (2nd round) #1: a stream the client reset freed its place under
// MAX_CONCURRENT_STREAMS at once, while its upstream still had it: a
// client could open and reset streams faster than the upstream ended them
// (the rapid-reset pattern, CVE-2023-44487; the reset budget bounds only
// the rate). A stream reset upstream now counts against its client's limit
// until the upstream has confirmed the reset: it acknowledged a PING the
// relay wrote after it. (Third review, #2: the client's new streams then
// wait for a slot, where they were refused; a waiting stream's body is
// accounted for, and a waiting stream the client resets is dropped.)
func TestH2ResetStreamsHoldTheirSlots(t *testing.T) {
	headers := make(chan uint32, h2MaxStreams+8)
	body := make(chan string, 1)
	pinged := make(chan struct{}, 1)
	ack := make(chan func(*rawH2), 1)
	var unacked [][8]byte // the upstream's goroutine's
	up := rawH2Server(t, nil, func(u *rawH2) {
		_ = u.c.SetDeadline(time.Time{})
		pump(u, func(f http2.Frame) {
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				headers <- f.StreamID
			case *http2.DataFrame:
				if f.StreamEnded() {
					body <- string(f.Data())
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					// Held: the upstream has not got to the resets.
					unacked = append(unacked, f.Data)
					select {
					case pinged <- struct{}{}:
					default:
					}
				}
			}
		}, ack)
	})
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr)
	c.atOnce(func() {
		for i := range h2MaxStreams {
			c.get(uint32(2*i+1), "/")
		}
	})
	for range h2MaxStreams {
		select {
		case <-headers:
		case <-time.After(10 * time.Second):
			t.Fatal("the upstream did not get every stream")
		}
	}
	c.atOnce(func() {
		for i := range h2MaxStreams {
			_ = c.fr.WriteRSTStream(uint32(2*i+1), http2.ErrCodeCancel)
		}
	})
	select {
	case <-pinged:
	case <-time.After(10 * time.Second):
		t.Fatal("no PING followed the resets upstream")
	}
	// The upstream has not confirmed the resets: the client's new streams
	// wait for a slot (before the third review they were refused). One
	// sends a body; another is reset while it waits.
	next := uint32(2*h2MaxStreams + 1)
	c.headers(next, false, ":method", "POST", ":scheme", "http", ":authority", "svc.example", ":path", "/")
	_ = c.fr.WriteData(next, true, []byte("hello"))
	c.get(next+2, "/")
	_ = c.fr.WriteRSTStream(next+2, http2.ErrCodeCancel)
	on, ok := c.framesBeforePong(next, nil)
	if !ok || len(on) > 0 {
		t.Fatalf("stream %d past %d reset ones: got %v (%v), want it to wait", next, h2MaxStreams, on, ok)
	}
	st := snapshot(rl.srv, rl.pool)
	if st.held != h2MaxStreams || st.queued != 1 || st.streams != 1 {
		t.Errorf("%d streams held, %d waiting, %d in all; want %d, 1, 1", st.held, st.queued, st.streams, h2MaxStreams)
	}
	// Its body is in the relay, and takes the client's connection window.
	if st.connRecv+st.connFree != h2ConnWindow-5 {
		t.Errorf("the connection window has %d of %d bytes, want 5 taken by the waiting body", st.connRecv+st.connFree, h2ConnWindow)
	}

	// The upstream confirms: the slots are free again.
	ack <- func(u *rawH2) {
		for _, p := range unacked {
			_ = u.fr.WritePing(true, p)
		}
		unacked = nil
	}
	if !waitFor(func() bool { return rl.heldStreams() == 0 }) {
		t.Fatalf("%d streams still held after the upstream confirmed the resets", rl.heldStreams())
	}
	select {
	case <-headers:
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting stream did not reach the upstream once the resets were confirmed")
	}
	select {
	case b := <-body:
		if b != "hello" {
			t.Errorf("the waiting stream's body reached the upstream as %q", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting stream's body did not reach the upstream")
	}
	if len(headers) > 0 {
		t.Errorf("the waiting stream reset by its client reached the upstream too")
	}
	rl.pool.mu.Lock()
	conns := rl.pool.conns
	rl.pool.mu.Unlock()
	for _, uc := range conns {
		uc.mu.Lock()
		if uc.active != 1 {
			t.Errorf("upstream connection has %d streams, want 1", uc.active)
		}
		uc.mu.Unlock()
	}
}

// The PINGs that confirm resets follow net/http's transport: after one is
// acknowledged, the next waits until the upstream has sent HEADERS or
// DATA. gRPC servers end a connection that PINGs them more often (its
// "too_many_pings" GOAWAY would fail every stream on it).
func TestH2ResetPingsWaitForUpstreamFrames(t *testing.T) {
	type event struct {
		kind string
		id   uint32
	}
	events := make(chan event, 16)
	do := make(chan func(*rawH2))
	up := rawH2Server(t, nil, func(u *rawH2) {
		pump(u, func(f http2.Frame) {
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				events <- event{"HEADERS", f.StreamID}
			case *http2.RSTStreamFrame:
				events <- event{"RST", f.StreamID}
			case *http2.PingFrame:
				if !f.IsAck() {
					_ = u.fr.WritePing(true, f.Data)
					events <- event{"PING", 0}
				}
			}
		}, do)
	})
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr)
	expect := func(kind string) event {
		t.Helper()
		select {
		case e := <-events:
			if e.kind != kind {
				t.Fatalf("upstream got %s %d, want %s", e.kind, e.id, kind)
			}
			return e
		case <-time.After(10 * time.Second):
			t.Fatalf("upstream got no %s", kind)
		}
		return event{}
	}
	for _, id := range []uint32{1, 3} {
		c.get(id, "/")
		expect("HEADERS")
		_ = c.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		expect("RST")
		if id == 1 {
			expect("PING") // acknowledged at once
			// The relay has read the acknowledgement before stream 3
			// starts; else one PING may confirm both resets.
			if !waitFor(func() bool { return rl.heldStreams() == 0 }) {
				t.Fatalf("%d streams held after the upstream confirmed", rl.heldStreams())
			}
		}
	}
	// Stream 5 goes upstream behind the reset of 3, and behind a PING if
	// one had been written with it.
	c.get(5, "/")
	up5 := expect("HEADERS").id
	if n := rl.heldStreams(); n != 1 {
		t.Errorf("%d streams held, want 1 (stream 3)", n)
	}
	// The upstream answers: now a PING may confirm the reset of 3.
	do <- func(u *rawH2) { u.headers(up5, true, ":status", "200") }
	expect("PING")
	if !waitFor(func() bool { return rl.heldStreams() == 0 }) {
		t.Errorf("%d streams held after the upstream confirmed", rl.heldStreams())
	}
}

// pipeClient serves one relayed client connection over a pipe with cfg,
// its streams going to pool: the relay's writes block as soon as the
// client does not read.
func pipeClient(t *testing.T, cfg Config, pool *H2Pool) (*rawH2, *Metrics) {
	t.Helper()
	s, m, _ := startServer(t, cfg)
	cli, srv := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeConn(t.Context(), srv, &Conn{Protocol: header.HTTP2, H2: pool, Labels: Labels{Direction: cfg.Direction}})
	}()
	t.Cleanup(func() { _ = cli.Close(); <-done })
	return newRawH2(t, cli), m
}

// start writes the client preface and the frames that frames writes
// through r in one write.
func (r *rawH2) start(frames func()) {
	r.t.Helper()
	var buf bytes.Buffer
	buf.WriteString(http2.ClientPreface)
	fr := r.fr
	r.fr = http2.NewFramer(&buf, nil)
	frames()
	r.fr = fr
	if _, err := r.c.Write(buf.Bytes()); err != nil {
		r.t.Errorf("write frames: %v", err)
	}
}

// pipeDial dials upstreams over pipes, each served by serve after the
// preface and the upstream's settings.
func pipeDial(t *testing.T, settings []http2.Setting, serve func(*rawH2)) func(context.Context) (net.Conn, error) {
	return func(context.Context) (net.Conn, error) {
		cli, srv := net.Pipe()
		go func() {
			defer srv.Close()
			u := newRawH2(t, srv)
			preface := make([]byte, len(http2.ClientPreface))
			if _, err := io.ReadFull(srv, preface); err != nil || string(preface) != http2.ClientPreface {
				return
			}
			if u.fr.WriteSettings(settings...) != nil {
				return
			}
			serve(u)
		}()
		return cli, nil
	}
}

// Review (2nd round) #2: nothing bounded a write, so a peer that stopped
// reading held the relay's writer (and every stream of the connection,
// and their buffers) for good. A write that takes longer than the write
// timeout now ends the connection, counted and logged; an upstream's
// streams fail as timed out.
func TestH2WriteTimeoutClosesConnection(t *testing.T) {
	const timeout = 500 * time.Millisecond
	t.Run("client", func(t *testing.T) {
		up := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			chunk := make([]byte, 64<<10)
			for range 128 { // 8 MiB, more than the windows on the way
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}), 0)
		core, logs := observer.New(zapcore.InfoLevel)
		pool := NewH2Pool(TransportConfig{Dial: dialTo(up)})
		t.Cleanup(pool.CloseIdle)
		c, m := pipeClient(t, Config{Direction: "inbound", WriteTimeout: timeout, Log: zap.New(core)}, pool)
		// At once, and read at once: the relay's first writes must not
		// wait for the client's.
		c.start(func() {
			_ = c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
			_ = c.fr.WriteWindowUpdate(0, 1<<31-1-65535)
			c.get(1, "/big")
		})
		if c.next(isType[*http2.MetaHeadersFrame]) == nil {
			t.Fatal("no response")
		}
		// The client reads no more: the relay's writer blocks on the pipe.
		timeouts := m.h2timeouts.WithLabelValues("inbound", "src")
		if !waitFor(func() bool { return testutil.ToFloat64(timeouts) == 1 }) {
			t.Fatal("the relay did not give up on a client that reads nothing")
		}
		if _, err := io.Copy(io.Discard, c.c); err != nil { // until EOF: closed
			t.Errorf("client connection: %v, want it closed", err)
		}
		if n := logs.FilterMessageSnippet("read nothing for the write timeout").Len(); n != 1 {
			t.Errorf("logged %d write timeouts, want 1", n)
		}
	})
	t.Run("upstream", func(t *testing.T) {
		stop := make(chan struct{})
		t.Cleanup(func() { close(stop) })
		dial := pipeDial(t, []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1}}, func(u *rawH2) {
			_ = u.fr.WriteWindowUpdate(0, 1<<31-1-65535)
			u.next(isType[*http2.MetaHeadersFrame])
			<-stop // reads no more
		})
		s, m, _ := startServer(t, Config{Direction: "inbound"})
		pool := NewH2Pool(TransportConfig{Dial: dial, WriteTimeout: timeout})
		t.Cleanup(pool.CloseIdle)
		addr := serveOne(t, s, &Conn{Protocol: header.HTTP2, H2: pool, Labels: Labels{Direction: "inbound"}})
		c := dialRawH2(t, addr)
		c.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "svc.example", ":path", "/upload")
		_ = c.fr.WriteData(1, false, make([]byte, 64<<10))
		f, _ := c.next(func(f http2.Frame) bool { return f.Header().StreamID == 1 }).(*http2.MetaHeadersFrame)
		if f == nil || headerField(f, ":status") != "504" || headerField(f, ErrorHeader) != ReasonTimeout {
			t.Fatalf("answer %v, want 504 %s", f, ReasonTimeout)
		}
		if n := testutil.ToFloat64(m.h2timeouts.WithLabelValues("inbound", "dst")); n != 1 {
			t.Errorf("http2_write_timeouts_total{peer=dst} = %v, want 1", n)
		}
	})
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// wantDialBackoff sends requests to a dead upstream with get: every one
// is answered 502 unreachable and counted, and only the first
// dialBackoffAfter of them dial.
func wantDialBackoff(t *testing.T, get func() (int, string), dials *atomic.Int32, m *Metrics, direction string) {
	t.Helper()
	const requests = 20
	for range requests {
		if code, reason := get(); code != http.StatusBadGateway || reason != ReasonUnreachable {
			t.Fatalf("got %d %s, want 502 %s", code, reason, ReasonUnreachable)
		}
	}
	if n := dials.Load(); n != dialBackoffAfter {
		t.Errorf("%d requests to a dead upstream dialed %d times, want %d", requests, n, dialBackoffAfter)
	}
	if n := testutil.ToFloat64(m.errors.WithLabelValues(direction, ReasonUnreachable)); n != requests {
		t.Errorf("http_proxy_errors_total{reason=unreachable} = %v, want %d", n, requests)
	}
}

// countingDial dials the address in *to, counting the attempts.
func countingDial(to *atomic.Pointer[string], dials *atomic.Int32) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		dials.Add(1)
		return dialTo(*to.Load())(ctx)
	}
}

// Review (2nd round) #3: every stream that needed a connection to an
// upstream that refuses them dialed again. After a failed connect the pool
// now waits before the next (backoff, reset by a success), and streams
// meanwhile fail at once with the same answer.
func TestH2DialBackoff(t *testing.T) {
	dead, live := closedAddr(t), h2cServer(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), 0)
	var to atomic.Pointer[string]
	to.Store(&dead)
	var dials atomic.Int32
	pool := NewH2Pool(TransportConfig{Dial: countingDial(&to, &dials)})
	pool.backoff, pool.maxBackoff = time.Hour, time.Hour // none ends in the test
	t.Cleanup(pool.CloseIdle)
	s, m, _ := startServer(t, Config{Direction: "inbound"})
	addr := serveOne(t, s, &Conn{Protocol: header.HTTP2, H2: pool, Labels: Labels{Direction: "inbound"}})
	client := h2cClient(t, addr)
	get := func() (int, string) {
		t.Helper()
		resp, err := client.Get("http://svc.example/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get(ErrorHeader)
	}
	wantDialBackoff(t, get, &dials, m, "inbound")

	// The backoff over, the upstream back: a success resets it.
	to.Store(&live)
	pool.mu.Lock()
	pool.retryAt = time.Time{}
	pool.mu.Unlock()
	if code, _ := get(); code != http.StatusOK {
		t.Fatalf("got %d once the upstream is back, want 200", code)
	}
	pool.mu.Lock()
	failures := pool.failures
	pool.mu.Unlock()
	if n := dials.Load(); n != dialBackoffAfter+1 || failures != 0 {
		t.Errorf("%d dials, %d failures in a row; want %d and 0", n, failures, dialBackoffAfter+1)
	}
}

// twoPools picks a first, then b for a stream whose connect to a failed.
type twoPools struct {
	a, b   *H2Pool
	failed func(error)
}

func (p twoPools) PickH2(skip map[string]bool) (H2Pick, error) {
	if skip["a"] {
		return H2Pick{Pool: p.b}, nil
	}
	return H2Pick{Pool: p.a, Key: "a", Failed: func(err error) bool { p.failed(err); return true }}, nil
}

// A balanced stream whose endpoint's pool is backing off moves on to
// another endpoint, as when its connect fails: the backoff's error is
// the dial's.
func TestH2DialBackoffPicksAnotherEndpoint(t *testing.T) {
	dead, live := closedAddr(t), h2cServer(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), 0)
	var to atomic.Pointer[string]
	to.Store(&dead)
	var dials atomic.Int32
	var mu sync.Mutex
	var errs []error
	picker := twoPools{
		a:      NewH2Pool(TransportConfig{Dial: countingDial(&to, &dials)}),
		b:      NewH2Pool(TransportConfig{Dial: dialTo(live)}),
		failed: func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() },
	}
	picker.a.backoff, picker.a.maxBackoff = time.Hour, time.Hour
	t.Cleanup(picker.a.CloseIdle)
	t.Cleanup(picker.b.CloseIdle)
	s, _, _ := startServer(t, Config{Direction: "outbound"})
	addr := serveOne(t, s, &Conn{Protocol: header.HTTP2, H2: picker, Labels: Labels{Direction: "outbound"}})
	client := h2cClient(t, addr)
	const requests = 10
	for range requests {
		resp, err := client.Get("http://svc.example/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("got %s, want 200 from the other endpoint", resp.Status)
		}
	}
	if n := dials.Load(); n != dialBackoffAfter {
		t.Errorf("the dead endpoint was dialed %d times, want %d", n, dialBackoffAfter)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, err := range errs {
		if !isDialError(err) || (i >= dialBackoffAfter) != errors.Is(err, ErrDialBackoff) {
			t.Errorf("connect failure %d: %v; want the dial's error, then wrapped in ErrDialBackoff", i, err)
		}
	}
}

// h2sender sends DATA as its peer's windows allow, as a well-behaved
// peer: conn is the connection's window, win each stream's, init a new
// stream's.
type h2sender struct {
	r    *rawH2
	conn int64
	init int64
	win  map[uint32]int64
	peak int64 // the largest stream window seen after an update
}

// newSender returns a sender on r whose windows are what r reads up to the
// peer's first connection WINDOW_UPDATE: its SETTINGS, and that.
// answerFirstRequest waits for the first request's HEADERS on u and
// answers it 200 without ending the stream, leaving the body to the
// returned sender.
func answerFirstRequest(u *rawH2) (*h2sender, uint32) {
	snd := newSender(u)
	var id uint32
	u.next(func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		if ok {
			id = h.StreamID
		}
		return ok
	})
	snd.open(id)
	u.headers(id, false, ":status", "200")
	return snd, id
}

func newSender(r *rawH2) *h2sender {
	s := &h2sender{r: r, conn: 65535, init: 65535, win: map[uint32]int64{}}
	r.next(func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
				s.init = int64(v)
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				s.conn += int64(f.Increment)
				return true
			}
		}
		return false
	})
	return s
}

// open gives streams ids the initial window.
func (s *h2sender) open(ids ...uint32) {
	for _, id := range ids {
		s.win[id] = s.init
	}
}

// fill sends DATA in 16 KiB frames on streams ids, in turn, while the
// windows allow, then reads the window updates that came (up to the ACK
// of a PING), and so on: until it has sent want bytes or, want being 0,
// until a round brings no window, or 5 s have passed. It returns the
// bytes sent. A stream reset by the peer is left.
func (s *h2sender) fill(want int64, ids ...uint32) int64 {
	s.r.t.Helper()
	chunk := make([]byte, 16<<10)
	var sent int64
	deadline := time.Now().Add(5 * time.Second)
	for want == 0 || sent < want {
		progress := false
		for _, id := range ids {
			w, ok := s.win[id]
			if n := min(int64(len(chunk)), s.conn, w); ok && n > 0 && (want == 0 || sent < want) {
				if err := s.r.fr.WriteData(id, false, chunk[:n]); err != nil {
					s.r.t.Errorf("write data: %v", err)
					return sent
				}
				s.conn -= n
				s.win[id] -= n
				sent += n
				progress = true
			}
		}
		if progress {
			continue
		}
		if !s.sync() && (want == 0 || time.Now().After(deadline)) {
			break
		}
	}
	return sent
}

// sync reads frames up to the ACK of a PING, applying window updates;
// it reports whether any window opened.
func (s *h2sender) sync() bool {
	opened := false
	_ = s.r.fr.WritePing(false, [8]byte{7})
	s.r.next(func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				s.conn += int64(f.Increment)
			} else if _, ok := s.win[f.StreamID]; ok {
				s.win[f.StreamID] += int64(f.Increment)
				s.peak = max(s.peak, s.win[f.StreamID])
			}
			opened = true
		case *http2.RSTStreamFrame:
			delete(s.win, f.StreamID)
		case *http2.PingFrame:
			return f.IsAck() && f.Data == [8]byte{7}
		}
		return false
	})
	return opened
}

// Review (2nd round) #4: a client connection's window was given back as
// its frames arrived, so a client could put streams × 1 MiB (250 MiB) into
// the relay while the upstream took nothing. The window is now given back
// as the bytes leave the relay, written upstream or dropped: the client
// can have no more than h2ConnWindow in the relay.
func TestH2ClientConnectionWindowBoundsRequestBytes(t *testing.T) {
	do := make(chan func(*rawH2))
	// An upstream whose windows stay shut until told.
	up := rawH2Server(t, []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 0}}, func(u *rawH2) {
		pump(u, func(f http2.Frame) {
			if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
				_ = u.fr.WritePing(true, p.Data)
			}
		}, do)
	})
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr)
	const streams = 16
	ids := make([]uint32, streams)
	for i := range ids {
		ids[i] = uint32(2*i + 1)
		c.headers(ids[i], false, ":method", "POST", ":scheme", "http", ":authority", "svc.example", ":path", "/upload")
	}
	snd := newSender(c)
	snd.open(ids...)
	if sent := snd.fill(0, ids...); sent != h2ConnWindow {
		t.Fatalf("the client put %d bytes into the relay, want %d (the connection window; the streams' are %d)",
			sent, h2ConnWindow, streams*h2StreamWindow)
	}

	// Streams reset: what the relay held of them is dropped, and its
	// window comes back.
	half := ids[:streams/2]
	c.atOnce(func() {
		for _, id := range half {
			_ = c.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
	})
	for _, id := range half {
		delete(snd.win, id)
	}
	dropped := int64(len(half)) * h2ConnWindow / streams
	if sent := snd.fill(dropped, ids[streams/2:]...); sent != dropped {
		t.Errorf("after resetting streams that held %d bytes the client could send %d", dropped, sent)
	}

	// The upstream reads: what it takes leaves the relay, and the
	// client may send as much more.
	do <- func(u *rawH2) {
		_ = u.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
		_ = u.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	}
	if sent := snd.fill(h2ConnWindow, ids[streams/2:]...); sent != h2ConnWindow {
		t.Errorf("once the upstream read, the client could send %d more bytes, want at least %d", sent, h2ConnWindow)
	}
}

// Review (2nd round) #4, the other way: each response stream had a 1 MiB
// window, so a client that reads nothing could have streams × 1 MiB of
// answers held in the relay. A response stream now starts at
// h2UpStreamWindow and grows to h2StreamWindow as its client reads, within
// h2RespBudget per client connection, which it gets back when it ends.
// (The upstream connection's window is still given back on receipt: a
// client that does not read must not stall a connection others share.)
func TestH2ResponseWindowsBoundedPerClient(t *testing.T) {
	const streams = 16
	type result struct{ sent, peak int64 }
	results, more := make(chan result, 2), make(chan struct{})
	var once sync.Once
	goOn := func() { once.Do(func() { close(more) }) }
	up := rawH2Server(t, nil, func(u *rawH2) {
		snd := newSender(u)
		var ids []uint32
		u.next(func(f http2.Frame) bool {
			if h, ok := f.(*http2.MetaHeadersFrame); ok {
				ids = append(ids, h.StreamID)
			}
			return len(ids) == streams
		})
		snd.open(ids...)
		for _, id := range ids {
			u.headers(id, false, ":status", "200")
		}
		results <- result{sent: snd.fill(0, ids...)}
		<-more
		var r result
		r.sent = snd.fill(4*h2StreamWindow, ids...)
		r.peak = snd.peak
		for _, id := range ids {
			_ = u.fr.WriteData(id, true, nil)
		}
		results <- r
		u.next(func(http2.Frame) bool { return false })
	})
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	// A client that takes no DATA.
	c := dialRawH2(t, rl.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	t.Cleanup(goOn) // first: the upstream must not wait for a failed test
	for i := range streams {
		c.get(uint32(2*i+1), "/")
	}
	first := <-results
	if bound := int64(streams*h2UpStreamWindow + h2RespBudget); first.sent > bound || first.sent != streams*h2UpStreamWindow {
		t.Fatalf("the upstream put %d bytes into the relay for a client that reads nothing, want %d (at most %d)",
			first.sent, streams*h2UpStreamWindow, bound)
	}

	// The client reads: windows grow, within the budget, and the budget
	// comes back as the streams end.
	_ = c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	_ = c.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	ended := make(chan int)
	go func() {
		n := 0
		c.next(func(f http2.Frame) bool {
			if d, ok := f.(*http2.DataFrame); ok && d.StreamEnded() {
				n++
			}
			return n == streams
		})
		ended <- n
	}()
	goOn()
	second := <-results
	if second.sent != 4*h2StreamWindow || second.peak <= h2UpStreamWindow || second.peak > h2StreamWindow {
		t.Errorf("once the client read, the upstream sent %d bytes (want %d), its largest stream window was %d (want more than %d, at most %d)",
			second.sent, 4*h2StreamWindow, second.peak, h2UpStreamWindow, h2StreamWindow)
	}
	if n := <-ended; n != streams {
		t.Fatalf("%d of %d responses ended", n, streams)
	}
	budget := func() int64 {
		rl.srv.h2.mu.Lock()
		defer rl.srv.h2.mu.Unlock()
		for d := range rl.srv.h2.m {
			return d.respBudget.Load()
		}
		return -1
	}
	if !waitFor(func() bool { return budget() == h2RespBudget }) {
		t.Errorf("response budget %d after the streams ended, want %d back", budget(), h2RespBudget)
	}
}

// Review (2nd round) #5: response headers without a valid :status were
// taken for a 1xx, and 1xx responses were relayed without end. A missing
// or invalid :status, a 1xx that ends the stream, a 101 (HTTP/1's) and a
// 6th 1xx now fail the stream: reset upstream, 502 to the client.
func TestH2ResponseStatusChecked(t *testing.T) {
	for _, tc := range []struct {
		name string
		// heads are the upstream's header blocks (:status values, "-" for
		// none), the last with END_STREAM.
		heads []string
		want  []string // the :status of each HEADERS the client gets
	}{
		{"ok", []string{"200"}, []string{"200"}},
		{"1xx then ok", []string{"103", "100", "200"}, []string{"103", "100", "200"}},
		{"five 1xx", []string{"103", "103", "103", "103", "103", "200"}, []string{"103", "103", "103", "103", "103", "200"}},
		{"six 1xx", []string{"103", "103", "103", "103", "103", "103", "200"}, []string{"103", "103", "103", "103", "103", "502"}},
		{"missing", []string{"-"}, []string{"502"}},
		{"not a number", []string{"2x0"}, []string{"502"}},
		{"two digits", []string{"20"}, []string{"502"}},
		{"four digits", []string{"2000"}, []string{"502"}},
		{"signed", []string{"+20"}, []string{"502"}},
		{"above 599", []string{"600"}, []string{"502"}},
		{"below 100", []string{"099"}, []string{"502"}},
		{"1xx ending the stream", []string{"103"}, []string{"502"}},
		{"101", []string{"101", "200"}, []string{"502"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			upReset := make(chan http2.ErrCode, 1)
			up := rawH2Server(t, nil, func(u *rawH2) {
				f := u.next(isType[*http2.MetaHeadersFrame])
				if f == nil {
					return
				}
				id := f.Header().StreamID
				for i, st := range tc.heads {
					var kv []string
					if st != "-" {
						kv = []string{":status", st}
					}
					u.headers(id, i == len(tc.heads)-1, append(kv, "x-head", strconv.Itoa(i))...)
				}
				if r, _ := u.next(isType[*http2.RSTStreamFrame]).(*http2.RSTStreamFrame); r != nil {
					upReset <- r.ErrCode
				}
			})
			rl := startH2Relay(t, up, Config{Direction: "inbound"})
			c := dialRawH2(t, rl.addr)
			c.get(1, "/")
			var got []string
			var reason string
			c.next(func(f http2.Frame) bool {
				h, ok := f.(*http2.MetaHeadersFrame)
				if !ok || h.StreamID != 1 {
					return false
				}
				got = append(got, headerField(h, ":status"))
				reason = headerField(h, ErrorHeader)
				return headerField(h, ":status") >= "2"
			})
			if !slices.Equal(got, tc.want) {
				t.Fatalf("client got :status %v, want %v", got, tc.want)
			}
			if failed := tc.want[len(tc.want)-1] == "502"; failed {
				if reason != ReasonBadGateway {
					t.Errorf("%s %q, want %q", ErrorHeader, reason, ReasonBadGateway)
				}
				select {
				case <-upReset:
				case <-time.After(5 * time.Second):
					t.Error("the upstream's stream was not reset")
				}
				if n := testutil.ToFloat64(rl.m.errors.WithLabelValues("inbound", ReasonBadGateway)); n != 1 {
					t.Errorf("http_proxy_errors_total{reason=bad_gateway} = %v, want 1", n)
				}
			}
		})
	}
}

// The cap on what one stream may pin (h2MaxHeld), reached: tiny DATA
// frames of two streams, in turn, to an upstream whose connection takes
// nothing. They wait in the upstream writer's queue, where frames of
// different streams do not share buffers, each pinning one. The streams
// are reset with ENHANCE_YOUR_CALM, counted and logged, long before their
// windows are used up; the connection goes on.
func TestH2HeldBytesCapResetsStream(t *testing.T) {
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	headed := make(chan struct{})
	dial := pipeDial(t, nil, func(u *rawH2) {
		heads := 0
		u.next(func(f http2.Frame) bool {
			if _, ok := f.(*http2.MetaHeadersFrame); ok {
				heads++
			}
			return heads == 2
		})
		close(headed)
		<-stop // reads no more: the relay's writer blocks on the pipe
	})
	core, logs := observer.New(zapcore.InfoLevel)
	s, m, _ := startServer(t, Config{Direction: "inbound", Log: zap.New(core)})
	pool := NewH2Pool(TransportConfig{Dial: dial})
	t.Cleanup(pool.CloseIdle)
	addr := serveOne(t, s, &Conn{Protocol: header.HTTP2, H2: pool, Labels: Labels{Direction: "inbound"}})
	c := dialRawH2(t, addr)
	for _, id := range []uint32{1, 3} {
		c.headers(id, false, ":method", "POST", ":scheme", "http", ":authority", "svc.example", ":path", "/upload")
	}
	// Both streams on the upstream first: DATA that came while they still
	// waited for it would share buffers (TestH2TinyDataFramesShareBuffers)
	// and never reach the cap, as it did under load.
	select {
	case <-headed:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream did not get both requests")
	}
	// Enough for each stream to pin four times h2MaxHeld, and far from
	// its window.
	const frames = 8 * h2MaxHeld / (h2FrameSize + h2ItemCost)
	go func() { // the relay reads it all, whatever it writes
		var buf bytes.Buffer
		fr := http2.NewFramer(&buf, nil)
		for i := range frames {
			_ = fr.WriteData(uint32(1+2*(i%2)), false, []byte{'x'})
		}
		_, _ = c.c.Write(buf.Bytes())
	}()
	reset := map[uint32]http2.ErrCode{}
	c.next(func(f http2.Frame) bool {
		if r, ok := f.(*http2.RSTStreamFrame); ok {
			reset[r.StreamID] = r.ErrCode
		}
		return len(reset) == 2
	})
	for _, id := range []uint32{1, 3} {
		if code, ok := reset[id]; !ok || code != http2.ErrCodeEnhanceYourCalm {
			t.Errorf("stream %d: reset %v (%v), want ENHANCE_YOUR_CALM", id, code, ok)
		}
	}
	if n := testutil.ToFloat64(m.h2errors.WithLabelValues("inbound", "src", http2.ErrCodeEnhanceYourCalm.String())); n < 1 {
		t.Errorf("http2_connection_errors_total{code=ENHANCE_YOUR_CALM} = %v, want the resets counted", n)
	}
	if logs.FilterMessage("HTTP/2 stream reset: too much DATA held").Len() == 0 {
		t.Error("the reset was not logged")
	}
	if !c.pingPong() {
		t.Error("the connection did not survive its streams' resets")
	}
}
