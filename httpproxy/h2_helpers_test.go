package httpproxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/seed722d2a70/meshproxy/internal/header"
	"github.com/seed722d2a70/meshproxy/internal/tcptest"
)

// h2relay is a Server relaying HTTP/2 from a loopback port to one upstream.
type h2relay struct {
	addr string
	srv  *Server
	pool *H2Pool
	m    *Metrics
	reg  *prometheus.Registry
}

// startH2Relay relays the connections made to the returned relay's address
// to upstream, through a fresh pool closed when the test ends.
func startH2Relay(t *testing.T, upstream string, cfg Config) *h2relay {
	t.Helper()
	s, m, reg := startServer(t, cfg)
	pool := NewH2Pool(TransportConfig{Dial: dialTo(upstream), ResponseTimeout: cfg.IdleTimeout})
	t.Cleanup(func() {
		// After the server's cleanup (registered first, run last) would
		// be too late for streams it waits on; close idle ones both
		// before and after.
		pool.CloseIdle()
	})
	info := &Conn{Protocol: header.HTTP2, H2: pool, Upstream: upstream, Labels: Labels{Direction: cfg.Direction, TLS: "true"}}
	return &h2relay{addr: serveOne(t, s, info), srv: s, pool: pool, m: m, reg: reg}
}

// h2cServer serves h on a loopback port with prior-knowledge HTTP/2 only.
func h2cServer(t testing.TB, h http.Handler, maxStreams int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protos, HTTP2: &http.HTTP2Config{MaxConcurrentStreams: maxStreams}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// h2cClient speaks prior-knowledge HTTP/2 to addr.
func h2cClient(t *testing.T, addr string) *http.Client {
	t.Helper()
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protos, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// rawH2 is one end of an HTTP/2 connection driven frame by frame.
type rawH2 struct {
	t    *testing.T
	c    net.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
}

func newRawH2(t *testing.T, c net.Conn) *rawH2 {
	r := &rawH2{t: t, c: c, fr: http2.NewFramer(c, c)}
	r.fr.AllowIllegalWrites = true // to send what the relay must refuse
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	r.fr.MaxHeaderListSize = 4 << 20
	r.enc = hpack.NewEncoder(&r.hbuf)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return r
}

// dialRawH2 connects to addr as an HTTP/2 client announcing settings.
func dialRawH2(t *testing.T, addr string, settings ...http2.Setting) *rawH2 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	r := newRawH2(t, c)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	return r
}

// rawH2Server accepts HTTP/2 connections on a loopback port, announces
// settings and hands each connection to serve.
func rawH2Server(t *testing.T, settings []http2.Setting, serve func(*rawH2)) string {
	t.Helper()
	return tcptest.Serve(t, func(c net.Conn) {
		defer c.Close()
		r := newRawH2(t, c)
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c, preface); err != nil || string(preface) != http2.ClientPreface {
			return
		}
		if r.fr.WriteSettings(settings...) != nil {
			return
		}
		serve(r)
	})
}

// headers writes a HEADERS frame with fields given as name, value, ...
func (r *rawH2) headers(id uint32, end bool, kv ...string) {
	r.t.Helper()
	r.hbuf.Reset()
	for i := 0; i < len(kv); i += 2 {
		_ = r.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		r.t.Errorf("write headers: %v", err)
	}
}

// get opens stream id with a GET for path.
func (r *rawH2) get(id uint32, path string, kv ...string) {
	r.headers(id, true, append([]string{":method", "GET", ":scheme", "http", ":authority", "svc.example", ":path", path}, kv...)...)
}

// next reads frames, answering SETTINGS and PING, until one satisfies
// want, which it returns; nil if the connection ended first.
func (r *rawH2) next(want func(http2.Frame) bool) http2.Frame {
	r.t.Helper()
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return nil
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = r.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = r.fr.WritePing(true, f.Data)
			}
		}
		if want(f) {
			return f
		}
	}
}

func isType[F http2.Frame](f http2.Frame) bool { _, ok := f.(F); return ok }

// field returns a decoded header's value.
func headerField(f *http2.MetaHeadersFrame, name string) string {
	for _, hf := range f.Fields {
		if hf.Name == name {
			return hf.Value
		}
	}
	return ""
}

// atOnce sends the frames that frames writes through r in one write, so
// that the peer reads them together.
func (r *rawH2) atOnce(frames func()) {
	r.t.Helper()
	var buf bytes.Buffer
	fr := r.fr
	r.fr = http2.NewFramer(&buf, nil)
	r.fr.AllowIllegalWrites = true
	frames()
	r.fr = fr
	if _, err := r.c.Write(buf.Bytes()); err != nil {
		r.t.Errorf("write frames: %v", err)
	}
}

// framesBeforePong returns the frames on stream id that the peer writes
// before it answers a PING, which goes once ready holds for a frame read
// (at once if ready is nil); false if the connection ended first. The
// relay answers a PING after everything it wrote before reading it.
func (r *rawH2) framesBeforePong(id uint32, ready func(http2.Frame) bool) ([]http2.Frame, bool) {
	r.t.Helper()
	pinged := false
	ping := func() {
		pinged = true
		if err := r.fr.WritePing(false, [8]byte{1}); err != nil {
			r.t.Errorf("write ping: %v", err)
		}
	}
	if ready == nil {
		ping()
	}
	var on []http2.Frame
	end := r.next(func(f http2.Frame) bool {
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() && pinged {
			return true
		}
		if !pinged && ready(f) {
			ping()
		}
		if f.Header().StreamID == id {
			on = append(on, f)
		}
		return false
	})
	return on, end != nil
}
