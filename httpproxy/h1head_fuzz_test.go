package httpproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// The request heads the relay accepts, net/http reads the same way when it
// accepts them too: method, target, authority and, above all, framing,
// where a disagreement between two parsers is request smuggling. The head
// the relay sends on is one net/http reads, with the same framing and
// without the hop-by-hop fields.
func FuzzParseRequestHead(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /p?q=1 HTTP/1.1\r\nHost: a:80\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n1\r\na\r\n0\r\nX: 1\r\n\r\n",
		"GET http://b.example/x HTTP/1.1\r\nHost: a\r\nConnection: X-Hop, keep-alive\r\nX-Hop: 1\r\nKeep-Alive: 5\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"CONNECT b.example:443 HTTP/1.1\r\nHost: b.example:443\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nTE: trailers, gzip\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
		"GET http://user:secret@b.example/x HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h h1Head
		if err := h.read(bufio.NewReader(bytes.NewReader(data))); err != nil {
			return
		}
		if err := h.parseRequest(); err != nil {
			return // stricter than net/http is safe: the request is refused
		}
		r, err := readRequestAsServer(data)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				// Allowed: the relay sends the target on as it came and
				// leaves what is in it (escapes, a port's syntax) to
				// the upstream; the framing does not depend on it.
				return
			}
			t.Fatalf("the relay takes %q, which net/http's server refuses: %v", data, err)
		}
		if got := string(h.bytes(h.method)); got != r.Method {
			t.Errorf("method %q, net/http %q", got, r.Method)
		}
		if got := string(h.bytes(h.target)); got != r.RequestURI {
			t.Errorf("target %q, net/http %q", got, r.RequestURI)
		}
		if got := string(h.authority()); got != r.Host {
			t.Errorf("authority %q, net/http %q", got, r.Host)
		}
		checkFraming(t, &h, r)
		if h.upgrading() || r.Method == http.MethodConnect {
			return
		}

		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		writeRequestHead(w, &h, "upstream:80")
		_ = w.Flush()
		fwd, err := http.ReadRequest(bufio.NewReader(&out))
		if err != nil {
			t.Fatalf("net/http cannot read the forwarded head %q: %v", out.Bytes(), err)
		}
		checkFraming(t, &h, fwd)
		for _, k := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Upgrade", "Proxy-Authorization"} {
			if v := fwd.Header.Values(k); len(v) > 0 {
				t.Errorf("forwarded hop-by-hop %s: %q", k, v)
			}
		}
		for _, tok := range h.connTokens {
			name := http.CanonicalHeaderKey(string(h.bytes(tok)))
			switch name {
			case "Content-Length", "Transfer-Encoding", "Host", "Te":
				continue // written by the relay itself
			}
			if v := fwd.Header.Values(name); len(v) > 0 {
				t.Errorf("forwarded %s, named by Connection: %q", name, v)
			}
		}
		if want := r.Host; want != "" && fwd.Host != want {
			t.Errorf("forwarded Host %q, want %q", fwd.Host, want)
		}
	})
}

// readRequestAsServer reads a request head as net/http's server does:
// http.ReadRequest, and the checks its server makes after it.
func readRequestAsServer(data []byte) (*http.Request, error) {
	r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
	if err != nil {
		return nil, err
	}
	// ReadRequest drops the Host fields, which the server checks: read
	// them again with the same reader.
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(data)))
	if _, err := tp.ReadLine(); err != nil {
		return nil, err
	}
	fields, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil, err
	}
	hosts := fields["Host"]
	if r.ProtoAtLeast(1, 1) && len(hosts) == 0 && r.Method != http.MethodConnect {
		return nil, errors.New("missing required Host header")
	}
	if len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]) {
		return nil, errors.New("malformed Host header")
	}
	for k, vv := range r.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, errors.New("invalid header name")
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, errors.New("invalid header value")
			}
		}
	}
	return r, nil
}

func checkFraming(t *testing.T, h *h1Head, r *http.Request) {
	t.Helper()
	switch {
	case h.chunked:
		if len(r.TransferEncoding) != 1 || r.TransferEncoding[0] != "chunked" {
			t.Errorf("chunked, net/http: transfer encoding %v, length %d", r.TransferEncoding, r.ContentLength)
		}
	case r.ContentLength != max(h.contentLength, 0) || len(r.TransferEncoding) > 0:
		t.Errorf("length %d, net/http: %d, transfer encoding %v", h.contentLength, r.ContentLength, r.TransferEncoding)
	}
}

// Response heads the relay accepts, net/http reads with the same status
// and framing.
func FuzzParseResponseHead(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n",
		"HTTP/1.0 204\r\nConnection: keep-alive\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"HTTP/1.1 500 Internal Server Error\r\nGrpc-Status: 14\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h h1Head
		if err := h.read(bufio.NewReader(bytes.NewReader(data))); err != nil {
			return
		}
		if err := h.parseResponse(); err != nil {
			return
		}
		r, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), nil)
		if err != nil {
			t.Fatalf("the relay takes %q, which net/http refuses: %v", data, err)
		}
		if r.StatusCode != h.status {
			t.Errorf("status %d, net/http %d", h.status, r.StatusCode)
		}
		if r.StatusCode >= 200 && r.StatusCode != 204 && r.StatusCode != 304 {
			if h.chunked != (len(r.TransferEncoding) == 1) {
				t.Errorf("chunked %v, net/http transfer encoding %v", h.chunked, r.TransferEncoding)
			}
			if !h.chunked && r.ContentLength != h.contentLength {
				t.Errorf("length %d, net/http %d", h.contentLength, r.ContentLength)
			}
		}
	})
}

// The chunked bodies the relay passes on, net/http reads as a request body
// the same way: the same data, trailers and, above all, the same end, where
// a disagreement is request smuggling. The relay refusing what net/http
// takes is allowed (refusing is safe); the reverse only where net/http
// limits what the relay bounds otherwise. What the relay writes, net/http
// reads back to the same data.
func FuzzRelayChunked(f *testing.F) {
	for _, seed := range []string{
		"5\r\nhello\r\n0\r\n\r\n",
		"3;ext=\"v\"\r\nabc\r\n0\r\nX-Sum: 1\r\nGrpc-Status: 0\r\n\r\n",
		"A\r\n0123456789\r\n1 \r\nx\r\n0\r\n\r\n",
		"0\n\r\n",
		"2;\nxx\r\n0\r\n\r\n",
		"2;a\rb\r\nxx\r\n0\r\n\r\n",
		"0\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"1\r\nx\r\n0\r\nA: 1\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	bufs := &sync.Pool{New: func() any { b := make([]byte, 64); return &b }} // small: chunks span reads
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		var trailers h1Head
		rd := bytes.NewReader(data)
		src := bufio.NewReader(rd)
		bc := bodyCopy{dst: w, src: src, bufs: bufs}
		err := bc.chunked(&trailers, false)
		bc.release()
		if err != nil {
			return
		}
		_ = w.Flush()
		used := len(data) - rd.Len() - src.Buffered()

		want, wantTrailers, wantUsed, err := readChunkedAsServer(data)
		if err != nil {
			if strings.Contains(err.Error(), "too much non-data") {
				// Allowed: net/http bounds extension bytes per data
				// byte; the relay drops extensions and bounds each line.
				return
			}
			t.Fatalf("the relay takes %q, which net/http refuses: %v", data, err)
		}
		if used != wantUsed {
			t.Fatalf("the relay ends the body of %q after %d bytes, net/http after %d", data, used, wantUsed)
		}
		got, gotTrailers, gotUsed, err := readChunkedAsServer(out.Bytes())
		if err != nil {
			t.Fatalf("the relayed body %q does not decode: %v", out.Bytes(), err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("relayed data %q, net/http decodes the original to %q", got, want)
		}
		if gotUsed != out.Len() {
			t.Errorf("the relayed body %q ends after %d bytes", out.Bytes(), gotUsed)
		}
		if !equalHeader(gotTrailers, wantTrailers) {
			t.Errorf("relayed trailers %v, net/http reads %v", gotTrailers, wantTrailers)
		}
		relayTrailers := http.Header{}
		for _, f := range trailers.fields {
			relayTrailers.Add(string(trailers.bytes(f.name)), string(trailers.bytes(f.value)))
		}
		if !equalHeader(relayTrailers, wantTrailers) {
			t.Errorf("the relay reads trailers %v, net/http %v", relayTrailers, wantTrailers)
		}
	})
}

// readChunkedAsServer reads body as net/http's server reads a chunked
// request body: its data, its trailers and how many bytes of body it took.
func readChunkedAsServer(body []byte) (data []byte, trailers http.Header, used int, err error) {
	const head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	rd := bytes.NewReader(append([]byte(head), body...))
	br := bufio.NewReader(rd)
	r, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, 0, err
	}
	if data, err = io.ReadAll(r.Body); err != nil {
		return nil, nil, 0, err
	}
	return data, r.Trailer, len(body) - rd.Len() - br.Buffered(), nil
}

func equalHeader(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}
