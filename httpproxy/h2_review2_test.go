package httpproxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/seed722d2a70/meshproxy/internal/header"
	"github.com/seed722d2a70/meshproxy/internal/tcptest"
)

// Tests of the second review's findings.

// silentUpstream accepts connections and never answers: streams sent to it
// wait for its SETTINGS, alive.
func silentUpstream(t *testing.T) string {
	return tcptest.Serve(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
}

// pipeRelayServer is pipeH2 with the Server, to an upstream of choice.
func pipeRelayServer(t *testing.T, upstream string) (*rawH2, *Server, *Metrics) {
	t.Helper()
	s, m, _ := startServer(t, Config{Direction: "inbound"})
	pool := NewH2Pool(TransportConfig{Dial: dialTo(upstream)})
	t.Cleanup(pool.CloseIdle)
	cli, srv := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeConn(t.Context(), srv, &Conn{Protocol: header.HTTP2, H2: pool, Labels: Labels{Direction: "inbound"}})
	}()
	t.Cleanup(func() { _ = cli.Close(); <-done })
	return newRawH2(t, cli), s, m
}

// clientQueued is the number of items queued for the writers of the
// Server's client connections.
func clientQueued(s *Server) int {
	s.h2.mu.Lock()
	defer s.h2.mu.Unlock()
	n := 0
	for d := range s.h2.m {
		d.w.inbox.mu.Lock()
		n += len(d.w.inbox.items)
		d.w.inbox.mu.Unlock()
	}
	return n
}

// Finding 2: each PADDED DATA frame queued a WINDOW_UPDATE of its own,
// outside the control cap: a client that reads nothing grew the queue by
// one item per 10-byte frame. Padding credit is now batched like the
// data's.
func TestH2PaddedDataQueuesNoCreditEach(t *testing.T) {
	r, s, _ := pipeRelayServer(t, silentUpstream(t))
	r.hbuf.Reset()
	for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "a"}, {":path", "/"}} {
		_ = r.enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	block := bytes.Clone(r.hbuf.Bytes())
	const n = 20_000
	var sent atomic.Int64
	floodUnread(r, n+1, func(fr *http2.Framer, i int) error {
		if i == 0 {
			return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndHeaders: true})
		}
		err := fr.WriteDataPadded(1, false, nil, []byte{}) // the pad length byte only
		if err == nil {
			sent.Add(1)
		}
		return err
	})
	for deadline := time.Now().Add(10 * time.Second); sent.Load() < n && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if sent.Load() < n {
		t.Fatalf("the relay read %d frames of %d", sent.Load(), n)
	}
	// The pipe returns once the relay has read a frame: the last one is
	// being handled.
	time.Sleep(50 * time.Millisecond)
	if q := clientQueued(s); q > 10 {
		t.Errorf("%d padded DATA frames queued %d items for a client that reads nothing", n, q)
	}
}

// Finding 2: batched, the padding's window still comes back, so a client
// padding its body is not stalled.
func TestH2PaddingWindowGivenBack(t *testing.T) {
	up := rawH2Server(t, nil, func(u *rawH2) { u.next(func(http2.Frame) bool { return false }) })
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr)
	c.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "svc.example", ":path", "/")
	pad := make([]byte, 255)
	const frames = 2048 // 512 KiB of padding: half the stream's window
	c.atOnce(func() {
		for range frames {
			_ = c.fr.WriteDataPadded(1, false, nil, pad)
		}
	})
	on, ok := c.framesBeforePong(1, nil)
	if !ok {
		t.Fatal("connection ended")
	}
	var credit uint32
	for _, f := range on {
		if wu, ok := f.(*http2.WindowUpdateFrame); ok {
			credit += wu.Increment
		}
	}
	if sent := uint32(frames * 256); credit+h2StreamWindow/4 <= sent || credit > sent {
		t.Errorf("%d bytes of padding sent, %d given back", sent, credit)
	}
}

// chunks reads its data at most n bytes a time, as a socket would.
type chunks struct {
	data []byte
	n    int
}

func (c *chunks) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), c.n)], c.data)
	c.data = c.data[k:]
	return k, nil
}

// Finding 4: an idle connection held a 64 KiB read buffer and a 128 KiB
// write buffer for its lifetime. A reader borrows its large buffer only
// once a read fills its small one, and gives it back when it is about to
// wait with little buffered; no byte is lost either way.
func TestH2ReaderBorrowsOnlyWhileBusy(t *testing.T) {
	data := make([]byte, 300<<10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	bufs := newH2Bufs()
	r := newH2Reader(&chunks{data: data, n: 100 << 10}, &bufs.big)
	var got []byte
	p := make([]byte, 9)
	borrowed := false
	for {
		n, err := r.Read(p)
		got = append(got, p[:n]...)
		borrowed = borrowed || r.big != nil
		if len(got) == 9*2000 {
			r.idle() // about to wait, 4 KiB or less buffered
			if r.big != nil {
				t.Errorf("idle with %d bytes buffered: the large buffer is kept", r.Buffered())
			}
		}
		if err != nil {
			break
		}
	}
	if !borrowed {
		t.Error("a busy reader never borrowed a large buffer")
	}
	if !bytes.Equal(got, data) {
		t.Errorf("read %d bytes, not the %d written", len(got), len(data))
	}
	r.idle()
	if r.big != nil {
		t.Error("the large buffer is kept once idle")
	}
}

// Finding 4: a writer's buffer is borrowed until the flush.
func TestH2WriterBufferLentUntilFlush(t *testing.T) {
	var out bytes.Buffer
	bufs := newH2Bufs()
	w := &h2bufWriter{w: &out, pool: &bufs.write}
	var want []byte
	for i := range 3000 { // 300 KiB: more than a buffer
		p := bytes.Repeat([]byte{byte(i)}, 100)
		want = append(want, p...)
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if w.buf == nil {
		t.Fatal("no buffer while writing")
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if w.buf != nil {
		t.Error("the buffer is kept after the flush")
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("wrote %d bytes, want %d", out.Len(), len(want))
	}
}

// Finding 4: what idle connections cost on the heap, client and upstream
// side (the review measured ~187 KiB each).
func TestH2IdleConnectionMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap")
	}
	const n = 100
	// An upstream that costs next to nothing per connection: it announces
	// SETTINGS and reads into a small buffer.
	up := tcptest.Serve(t, func(c net.Conn) {
		_ = http2.NewFramer(c, nil).WriteSettings()
		var b [64]byte
		for {
			if _, err := c.Read(b[:]); err != nil {
				return
			}
		}
	})
	pool := NewH2Pool(TransportConfig{Dial: dialTo(up)})
	s, _, _ := startServer(t, Config{Direction: "inbound"})
	addr := serveOne(t, s, &Conn{Protocol: header.HTTP2, H2: pool, Labels: Labels{Direction: "inbound"}})
	before := heapBytes()
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		_, _ = io.WriteString(c, http2.ClientPreface)
		fr := http2.NewFramer(c, c)
		_ = fr.WriteSettings()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := fr.ReadFrame(); err != nil { // the relay's SETTINGS
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond) // the writers' first flush
	clientEach := (heapBytes() - before) / n

	before = heapBytes()
	for range n {
		c, err := pool.connect(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.closeIdle)
	}
	time.Sleep(100 * time.Millisecond)
	upEach := (heapBytes() - before) / n
	t.Logf("heap per idle connection: upstream %d KiB, client %d KiB (with the test's own end)", upEach>>10, clientEach>>10)
	for side, each := range map[string]int64{"upstream": upEach, "client": clientEach} {
		if each > 48<<10 {
			t.Errorf("an idle %s connection costs %d KiB", side, each>>10)
		}
	}
}

func heapBytes() int64 {
	runtime.GC()
	runtime.GC() // and what pools held
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// Finding 5: the HTTP/2 relay passed Proxy-Authorization and
// Proxy-Authenticate on, which the HTTP/1 relay strips; both now drop the
// same hop-by-hop fields.
func TestH2HopByHopFieldsAsHTTP1(t *testing.T) {
	up := rawH2Server(t, nil, func(u *rawH2) {
		h := u.next(isType[*http2.MetaHeadersFrame]).(*http2.MetaHeadersFrame)
		var names []string
		for _, f := range h.RegularFields() {
			names = append(names, f.Name)
		}
		u.headers(h.StreamID, true, ":status", "200", "x-seen", strings.Join(names, ","),
			"proxy-authenticate", "Basic", "keep-alive", "timeout=5", "x-kept", "1")
		u.next(func(http2.Frame) bool { return false })
	})
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr)
	c.get(1, "/", "proxy-authorization", "Basic eA==", "proxy-connection", "keep-alive", "upgrade", "h2c",
		"te", "trailers", "x-forwarded-for", "10.0.0.1", "x-kept", "1")
	h, _ := c.next(isType[*http2.MetaHeadersFrame]).(*http2.MetaHeadersFrame)
	if h == nil {
		t.Fatal("no response")
	}
	if got, want := headerField(h, "x-seen"), "te,x-forwarded-for,x-kept"; got != want {
		t.Errorf("upstream saw %q, want %q", got, want)
	}
	for _, name := range []string{"proxy-authenticate", "keep-alive"} {
		if v := headerField(h, name); v != "" {
			t.Errorf("client got %s: %q", name, v)
		}
	}
	if headerField(h, "x-kept") != "1" {
		t.Error("x-kept dropped")
	}
}

// Finding 5: one list for both relays, whatever the case.
func TestHopByHopName(t *testing.T) {
	for name, want := range map[string]bool{
		"connection": true, "Keep-Alive": true, "proxy-authenticate": true, "Proxy-Authorization": true,
		"proxy-connection": true, "TE": true, "transfer-encoding": true, "upgrade": true,
		"content-length": false, "host": false, "x-forwarded-for": false, "proxy": false, "": false,
	} {
		if hopByHopName(name) != want || hopByHopName([]byte(name)) != want {
			t.Errorf("hopByHopName(%q) != %v", name, want)
		}
	}
}

// h2Answer is what a client got: a GOAWAY, a reset of a stream, or
// response headers.
func h2Answer(f http2.Frame) string {
	switch f := f.(type) {
	case *http2.GoAwayFrame:
		return "GOAWAY " + f.ErrCode.String()
	case *http2.RSTStreamFrame:
		return fmt.Sprintf("RST %d %v", f.StreamID, f.ErrCode)
	case *http2.MetaHeadersFrame:
		return fmt.Sprintf("HEADERS %d %s", f.StreamID, headerField(f, ":status"))
	}
	return ""
}

// firstAnswer reads until the client gets an answer (see h2Answer), or
// the connection ends.
func (r *rawH2) firstAnswer() string {
	f := r.next(func(f http2.Frame) bool { return h2Answer(f) != "" })
	if f == nil {
		return "closed"
	}
	return h2Answer(f)
}

// Finding 6: frames RFC 9113 makes errors were ignored (h2spec 130/145,
// net/http 140/145).
func TestH2ConformanceErrors(t *testing.T) {
	echo := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(w, r.Body) }), 0)
	silent := rawH2Server(t, nil, func(u *rawH2) { u.next(func(http2.Frame) bool { return false }) })
	post := []string{":method", "POST", ":scheme", "http", ":authority", "svc.example", ":path", "/"}
	// answered sends a request on stream 1 and reads its answer.
	answered := func(c *rawH2) {
		c.get(1, "/")
		if c.next(func(f http2.Frame) bool {
			return f.Header().StreamID == 1 && f.Header().Flags.Has(http2.FlagDataEndStream)
		}) == nil {
			t.Fatal("no answer")
		}
	}
	tests := []struct {
		name     string
		upstream string
		send     func(c *rawH2)
		want     string
	}{
		{"WINDOW_UPDATE on an idle stream", echo, func(c *rawH2) { _ = c.fr.WriteWindowUpdate(5, 1) }, "GOAWAY PROTOCOL_ERROR"},
		{"DATA on a half-closed (remote) stream", silent, func(c *rawH2) {
			c.headers(1, true, post...)
			_ = c.fr.WriteData(1, true, []byte("x"))
		}, "RST 1 STREAM_CLOSED"},
		{"HEADERS on a half-closed (remote) stream", silent, func(c *rawH2) {
			c.headers(1, true, post...)
			c.headers(1, true, "x-trailer", "1")
		}, "RST 1 STREAM_CLOSED"},
		{"DATA after the client's RST_STREAM", silent, func(c *rawH2) {
			c.headers(1, false, post...)
			_ = c.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			_ = c.fr.WriteData(1, true, []byte("x"))
		}, "RST 1 STREAM_CLOSED"},
		{"DATA on a closed stream", echo, func(c *rawH2) {
			answered(c)
			_ = c.fr.WriteData(1, true, []byte("x"))
		}, "RST 1 STREAM_CLOSED"},
		{"request on a closed stream", echo, func(c *rawH2) {
			answered(c)
			c.get(1, "/")
		}, "GOAWAY PROTOCOL_ERROR"},
		{"stream ID below the last", silent, func(c *rawH2) {
			c.headers(5, false, post...)
			c.headers(3, false, post...)
		}, "GOAWAY PROTOCOL_ERROR"},
		{"HEADERS depending on its stream", silent, func(c *rawH2) {
			c.hbuf.Reset()
			for i := 0; i < len(post); i += 2 {
				_ = c.enc.WriteField(hpack.HeaderField{Name: post[i], Value: post[i+1]})
			}
			_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.hbuf.Bytes(), EndHeaders: true,
				Priority: http2.PriorityParam{StreamDep: 1, Weight: 1}})
		}, "RST 1 PROTOCOL_ERROR"},
		{"PRIORITY depending on its stream", silent, func(c *rawH2) {
			c.headers(1, false, post...)
			_ = c.fr.WritePriority(1, http2.PriorityParam{StreamDep: 1, Weight: 1})
		}, "RST 1 PROTOCOL_ERROR"},
		{"connection window over 2^31-1", echo, func(c *rawH2) {
			_ = c.fr.WriteWindowUpdate(0, 1<<31-1)
			_ = c.fr.WriteWindowUpdate(0, 1<<31-1)
		}, "GOAWAY FLOW_CONTROL_ERROR"},
		{"initial window change overflowing a stream's", silent, func(c *rawH2) {
			c.headers(1, false, post...)
			_ = c.fr.WriteWindowUpdate(1, 1<<31-1-65535)
			c.pingPong()
			_ = c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65536})
		}, "GOAWAY FLOW_CONTROL_ERROR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rl := startH2Relay(t, tt.upstream, Config{Direction: "inbound"})
			c := dialRawH2(t, rl.addr)
			tt.send(c)
			if got := c.firstAnswer(); got != tt.want {
				t.Errorf("client got %s, want %s", got, tt.want)
			}
		})
	}
}

// Finding 6: frames the relay itself reset are still ignored, not answered
// with STREAM_CLOSED (RFC 9113, 5.1).
func TestH2LateFramesOnRelayResetIgnored(t *testing.T) {
	rl := startH2Relay(t, "127.0.0.1:1", Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr)
	// CONNECT is answered 405 and reset at once (NO_ERROR) while its body
	// is on the way.
	c.atOnce(func() {
		c.headers(1, false, ":method", "CONNECT", ":authority", "a:1")
		_ = c.fr.WriteData(1, false, []byte("x"))
		c.headers(1, true, "x-trailer", "1")
	})
	// The PING goes once the answer is read: frames the relay answers
	// came before it.
	on, ok := c.framesBeforePong(1, func(f http2.Frame) bool {
		rst, ok := f.(*http2.RSTStreamFrame)
		return ok && rst.ErrCode == http2.ErrCodeNo
	})
	if !ok {
		t.Fatal("connection ended")
	}
	var got []string
	for _, f := range on {
		if a := h2Answer(f); a != "" {
			got = append(got, a)
		}
	}
	if want := "[HEADERS 1 405 RST 1 NO_ERROR]"; fmt.Sprint(got) != want {
		t.Errorf("client got %v, want %s", got, want)
	}
}

// writeBigHeaders writes a header block of fields given as name, value,
// ... in HEADERS and CONTINUATION frames of 16 KiB.
func (r *rawH2) writeBigHeaders(id uint32, end bool, kv ...string) {
	r.hbuf.Reset()
	for i := 0; i < len(kv); i += 2 {
		_ = r.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	block := r.hbuf.Bytes()
	first := true
	for first || len(block) > 0 {
		frag := block[:min(len(block), h2FrameSize)]
		block = block[len(frag):]
		if first {
			_ = r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: end, EndHeaders: len(block) == 0})
			first = false
		} else {
			_ = r.fr.WriteContinuation(id, len(block) == 0, frag)
		}
	}
}

// overLimit is header fields as name, value, ... over h2MaxHeaderList by
// their last field only: the framer drops the fields past the limit
// (Truncated) unless CONTINUATION frames follow, a connection error.
func overLimit() []string {
	var kv []string
	for i := range 10 {
		kv = append(kv, fmt.Sprintf("x-big-%d", i), strings.Repeat("x", 100<<10))
	}
	return append(kv, "x-last", strings.Repeat("x", 30<<10))
}

// Finding 6: header blocks over the limit (the relay's, or the one the
// receiving peer announced) were passed on cut off, or as they were.
func TestH2HeaderBlocksOverTheLimit(t *testing.T) {
	post := []string{":method", "POST", ":scheme", "http", ":authority", "svc.example", ":path", "/"}
	var upTrailers atomic.Int64
	// Answers after the request's end, with the headers the request
	// names in x-answer.
	up := rawH2Server(t, []http2.Setting{{ID: http2.SettingMaxHeaderListSize, Val: 4096}}, func(u *rawH2) {
		u.next(func(f http2.Frame) bool {
			h, ok := f.(*http2.MetaHeadersFrame)
			if !ok {
				return false
			}
			if h.PseudoValue("method") == "" {
				upTrailers.Add(1)
				return false
			}
			switch headerField(h, "x-answer") {
			case "big-headers":
				u.writeBigHeaders(h.StreamID, true, append([]string{":status", "200"}, overLimit()...)...)
			case "big-trailers":
				u.headers(h.StreamID, false, ":status", "200")
				u.writeBigHeaders(h.StreamID, true, overLimit()...)
			case "big-for-client":
				u.headers(h.StreamID, true, ":status", "200", "x-long", strings.Repeat("y", 2000))
			}
			return false
		})
	})
	tests := []struct {
		name     string
		settings []http2.Setting
		send     func(c *rawH2)
		want     string
	}{
		{"request trailers over the relay's limit", nil, func(c *rawH2) {
			c.headers(1, false, post...)
			c.writeBigHeaders(1, true, overLimit()...)
		}, "HEADERS 1 431"},
		{"request over the upstream's limit", nil, func(c *rawH2) {
			c.headers(1, true, append(post, "x-long", strings.Repeat("y", 5000))...)
		}, "HEADERS 1 431"},
		{"response headers over the relay's limit", nil, func(c *rawH2) {
			c.headers(1, true, append(post, "x-answer", "big-headers")...)
		}, "HEADERS 1 502"},
		{"response trailers over the relay's limit", nil, func(c *rawH2) {
			c.headers(1, true, append(post, "x-answer", "big-trailers")...)
			if a := c.firstAnswer(); a != "HEADERS 1 200" {
				t.Errorf("client got %s first", a)
			}
		}, "RST 1 CANCEL"},
		{"response over the client's limit", []http2.Setting{{ID: http2.SettingMaxHeaderListSize, Val: 1024}}, func(c *rawH2) {
			c.headers(1, true, append(post, "x-answer", "big-for-client")...)
		}, "RST 1 INTERNAL_ERROR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rl := startH2Relay(t, up, Config{Direction: "inbound"})
			c := dialRawH2(t, rl.addr, tt.settings...)
			c.pingPong() // the relay has the client's SETTINGS
			tt.send(c)
			if got := c.firstAnswer(); got != tt.want {
				t.Errorf("client got %s, want %s", got, tt.want)
			}
		})
	}
	if n := upTrailers.Load(); n != 0 {
		t.Errorf("upstream got %d trailers over the limit", n)
	}
}

// A response stream starts with a window of h2UpStreamWindow. Padding the
// upstream sends must come back before the window is spent, or a response
// padded past it stalls: the batch of padding credit is smaller than the
// smallest window.
func TestH2ResponsePaddingWindowGivenBack(t *testing.T) {
	credited := make(chan uint32, 1)
	up := rawH2Server(t, nil, func(u *rawH2) {
		f := u.next(isType[*http2.MetaHeadersFrame])
		if f == nil {
			return
		}
		id := f.Header().StreamID
		u.headers(id, false, ":status", "200")
		pad := make([]byte, 255)
		for range h2UpStreamWindow / 256 { // the whole starting window, padding only
			_ = u.fr.WriteDataPadded(id, false, nil, pad)
		}
		var got uint32
		u.next(func(f http2.Frame) bool {
			if wu, ok := f.(*http2.WindowUpdateFrame); ok && wu.StreamID == id {
				got += wu.Increment
			}
			return got > 0
		})
		credited <- got
		_ = u.fr.WriteData(id, true, nil)
		// Read on until the relay closes: closing with its frames unread
		// would reset the connection and lose the END_STREAM.
		u.next(func(http2.Frame) bool { return false })
	})
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr)
	_ = c.c.SetDeadline(time.Now().Add(5 * time.Second))
	c.get(1, "/")
	if c.next(func(f http2.Frame) bool {
		return f.Header().StreamID == 1 && f.Header().Flags.Has(http2.FlagDataEndStream)
	}) == nil {
		t.Fatal("the padded response did not end: its window was not given back")
	}
	if got := <-credited; got == 0 || got > h2UpStreamWindow {
		t.Errorf("the relay gave back %d bytes of a %d-byte padded window", got, h2UpStreamWindow)
	}
}

// Finding 1: a stream the relay answered itself (405, 431, 5xx) or reset
// left its client's streams at once, before the answer was written: a
// client that sent such requests and read nothing made the relay queue
// answers without bound (200 000 CONNECTs: 400 000 items, +230 MiB). Such
// a stream now counts against h2MaxStreams until its answer is written;
// past them the client's streams are refused, which the control cap
// bounds: GOAWAY ENHANCE_YOUR_CALM.
func TestH2UnreadAnswersBounded(t *testing.T) {
	enc := func(r *rawH2, kv ...string) []byte {
		r.hbuf.Reset()
		for i := 0; i < len(kv); i += 2 {
			_ = r.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return bytes.Clone(r.hbuf.Bytes()) // static table only: the same every time
	}
	cases := []struct {
		name     string
		upstream func(t *testing.T) string
		// frames the client sends on stream id
		stream func(fr *http2.Framer, r *rawH2, id uint32) error
	}{
		{"405 to CONNECT", func(*testing.T) string { return "127.0.0.1:1" },
			func(fr *http2.Framer, r *rawH2, id uint32) error {
				return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndStream: true, EndHeaders: true,
					BlockFragment: enc(r, ":method", "CONNECT", ":authority", "a:1")})
			}},
		{"502 from an unreachable upstream", func(*testing.T) string { return "127.0.0.1:1" },
			func(fr *http2.Framer, r *rawH2, id uint32) error {
				return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndStream: true, EndHeaders: true,
					BlockFragment: enc(r, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/")})
			}},
		{"reset for a protocol error", silentUpstream,
			func(fr *http2.Framer, r *rawH2, id uint32) error {
				if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndHeaders: true,
					BlockFragment: enc(r, ":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/")}); err != nil {
					return err
				}
				// A second HEADERS without END_STREAM: reset both ways.
				return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndHeaders: true, BlockFragment: enc(r, "x", "y")})
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, s, m := pipeRelayServer(t, tc.upstream(t))
			const n = 50_000
			var sent atomic.Int64
			floodUnread(r, n, func(fr *http2.Framer, i int) error {
				sent.Add(1)
				return tc.stream(fr, r, uint32(2*i+1))
			})
			calm := waitCalm(m)
			// The connection ended; its writer still waits for the client
			// to read what it had queued.
			q := clientQueued(s)
			t.Logf("%d streams sent, %d items queued", sent.Load(), q)
			if !calm {
				t.Fatalf("no ENHANCE_YOUR_CALM after %d streams from a client that reads nothing; %d items queued", sent.Load(), q)
			}
			// An answer is at most 3 items (HEADERS, DATA, RST_STREAM),
			// a refusal 1.
			if limit := 3*h2MaxStreams + h2MaxControl + 16; q > limit {
				t.Errorf("%d items queued, want at most %d", q, limit)
			}
			if code, ok := goAwayCode(r); !ok || code != http2.ErrCodeEnhanceYourCalm {
				t.Errorf("GOAWAY %v (%v), want ENHANCE_YOUR_CALM", code, ok)
			}
		})
	}
}

// Finding 3: only a client's RST_STREAM drew on the rapid-reset budget;
// streams the relay reset for the client's protocol error after sending
// them upstream cost nothing (3 001 HEADERS and 3 000 RST_STREAM upstream
// in 0.4 s, no GOAWAY). Every way a client ends such a stream early now
// draws on it. The client goes in rounds under h2MaxStreams, as in
// TestH2RapidResetGoAway: it opens streams, waits until the upstream has
// them, then breaks them.
func TestH2ProtocolErrorResetsDrawOnBudget(t *testing.T) {
	cases := []struct {
		name string
		get  bool // the request ends with its HEADERS
		cl   string
		// bad writes the frame that breaks stream id.
		bad func(fr *http2.Framer, block func(kv ...string) []byte, id uint32)
	}{
		{"second HEADERS without END_STREAM", false, "", func(fr *http2.Framer, block func(kv ...string) []byte, id uint32) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block("x", "y"), EndHeaders: true})
		}},
		{"DATA over content-length", false, "1", func(fr *http2.Framer, _ func(kv ...string) []byte, id uint32) {
			_ = fr.WriteData(id, false, []byte("xx"))
		}},
		{"DATA after END_STREAM", true, "", func(fr *http2.Framer, _ func(kv ...string) []byte, id uint32) {
			_ = fr.WriteData(id, false, []byte("x"))
		}},
		{"WINDOW_UPDATE of 0", false, "", func(fr *http2.Framer, _ func(kv ...string) []byte, id uint32) {
			_ = fr.WriteWindowUpdate(id, 0)
		}},
		{"window overflow", true, "", func(fr *http2.Framer, _ func(kv ...string) []byte, id uint32) {
			_ = fr.WriteWindowUpdate(id, 1<<31-1)
		}},
		{"dependency on itself", false, "", func(fr *http2.Framer, _ func(kv ...string) []byte, id uint32) {
			_ = fr.WritePriority(id, http2.PriorityParam{StreamDep: id})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var upHeaders atomic.Int64
			up := busyUpstream(t, &upHeaders)
			rl := startH2Relay(t, up, Config{Direction: "inbound"})
			c := dialRawH2(t, rl.addr)
			c.get(1, "/") // left open
			const round = 200
			id := uint32(3)
			sent := 0
			var g *http2.GoAwayFrame
			for ; sent < 10*h2ResetBurst && g == nil; sent += round {
				block := func(kv ...string) []byte {
					c.hbuf.Reset()
					for i := 0; i < len(kv); i += 2 {
						_ = c.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
					}
					return bytes.Clone(c.hbuf.Bytes())
				}
				c.atOnce(func() {
					for i := range uint32(round) {
						kv := []string{":method", "POST", ":scheme", "http", ":authority", "svc.example", ":path", "/"}
						if tc.cl != "" {
							kv = append(kv, "content-length", tc.cl)
						}
						_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id + 2*i, BlockFragment: block(kv...), EndStream: tc.get, EndHeaders: true})
					}
				})
				// (A window overflow is found by the relay's writer, after
				// the PING's answer: the GOAWAY may come in this round.)
				calm := rl.m.h2errors.WithLabelValues("inbound", "src", http2.ErrCodeEnhanceYourCalm.String())
				if !waitFor(func() bool { return upHeaders.Load() >= int64(1+sent+round) || testutil.ToFloat64(calm) > 0 }) {
					t.Fatalf("the upstream has %d streams, want %d", upHeaders.Load(), 1+sent+round)
				}
				var buf bytes.Buffer
				fr := http2.NewFramer(&buf, nil)
				fr.AllowIllegalWrites = true
				for range round {
					tc.bad(fr, block, id)
					id += 2
				}
				_ = fr.WritePing(false, [8]byte{5})
				go func() { _, _ = c.c.Write(buf.Bytes()) }() // fails once the relay closes
				f := c.next(func(f http2.Frame) bool {
					p, ok := f.(*http2.PingFrame)
					return isType[*http2.GoAwayFrame](f) || ok && p.IsAck() && p.Data == [8]byte{5}
				})
				if f == nil {
					break
				}
				g, _ = f.(*http2.GoAwayFrame)
				if g == nil && !waitFor(func() bool { return rl.heldStreams() == 0 && rl.liveStreams() <= 1 }) {
					t.Fatalf("%d reset streams still held, %d live", rl.heldStreams(), rl.liveStreams())
				}
			}
			t.Logf("%d streams sent and broken, the upstream saw %d", sent, upHeaders.Load())
			if g == nil || g.ErrCode != http2.ErrCodeEnhanceYourCalm {
				t.Fatalf("GOAWAY %v after %d broken streams, want ENHANCE_YOUR_CALM", g, sent)
			}
		})
	}
}

// liveStreams returns the streams of the relay's client connections.
func (rl *h2relay) liveStreams() int {
	rl.srv.h2.mu.Lock()
	defer rl.srv.h2.mu.Unlock()
	n := 0
	for d := range rl.srv.h2.m {
		d.mu.Lock()
		n += len(d.streams)
		d.mu.Unlock()
	}
	return n
}
