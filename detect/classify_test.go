package detect

import (
	"strings"
	"testing"
)

// classifyCases are inputs whose classification is settled by the bytes
// alone (done is true).
var classifyCases = []struct {
	name string
	in   string
	want Protocol
}{
	{"origin form", "GET / HTTP/1.1\r\n", HTTP1},
	{"with headers", "GET /index.html?q=1 HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1},
	{"absolute form", "GET http://example.com:8080/x?y=z HTTP/1.1\r\n", HTTP1},
	{"authority form", "CONNECT example.com:443 HTTP/1.1\r\n", HTTP1},
	{"asterisk form", "OPTIONS * HTTP/1.1\r\n", HTTP1},
	{"HTTP/1.0", "POST /submit HTTP/1.0\r\n", HTTP1},
	{"extension method", "PROPFIND /dav/ HTTP/1.1\r\n", HTTP1},
	{"lower-case method is a token", "get / HTTP/1.1\r\n", HTTP1},
	{"tchar method", "M-SEARCH * HTTP/1.1\r\n", HTTP1},
	{"non-ASCII target", "GET /caf\xc3\xa9 HTTP/1.1\r\n", HTTP1},
	{"HTTP/2 preface", http2Preface, HTTP2},
	{"HTTP/2 preface and SETTINGS", http2Preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00", HTTP2},

	{"garbage method", "G(T / HTTP/1.1\r\n", Opaque},
	{"space first", " GET / HTTP/1.1\r\n", Opaque},
	{"HTTP/1.2", "GET / HTTP/1.2\r\n", Opaque},
	{"HTTP/2.0 request line", "GET / HTTP/2.0\r\n", Opaque},
	{"lower-case version", "GET / http/1.1\r\n", Opaque},
	{"bare LF", "GET / HTTP/1.1\n", Opaque},
	{"missing target", "GET  HTTP/1.1\r\n", Opaque},
	{"control in target", "GET /\x01 HTTP/1.1\r\n", Opaque},
	{"DEL in target", "GET /\x7f HTTP/1.1\r\n", Opaque},
	{"no version", "GET /\r\n", Opaque},
	{"extra space before CRLF", "GET / HTTP/1.1 \r\n", Opaque},
	{"preface line then other", "PRI * HTTP/2.0\r\nHost: x\r\n", Opaque},
	{"preface diverges late", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\x00", Opaque},
	{"zero byte", "\x00", Opaque},
	{"TLS record, malformed", "\x16\x03\x01\x00\x00", Opaque},
	{"redis inline", "PING\r\n", Opaque},
	{"ssh banner", "SSH-2.0-OpenSSH_9.6\r\n", Opaque},
	{"postgres startup", "\x00\x00\x00\x08\x04\xd2\x16\x2f", Opaque},
}

func TestClassify(t *testing.T) {
	for _, tc := range classifyCases {
		t.Run(tc.name, func(t *testing.T) {
			got, done := Classify([]byte(tc.in))
			if !done || got != tc.want {
				t.Fatalf("Classify(%q) = %v, %v; want %v, true", tc.in, got, done, tc.want)
			}
		})
	}
}

func TestClassifyUndecided(t *testing.T) {
	for _, in := range []string{
		"",
		"G",
		"GET",
		"GET ",
		"GET /",
		"GET / HTTP/1.",
		"GET / HTTP/1.1",
		"GET / HTTP/1.1\r",
		"P",
		"PRI * HTTP/2",
		"PRI * HTTP/2.0\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r",
		"M-SEARCH",
		"CONNECT [::1]:443",
	} {
		if got, done := Classify([]byte(in)); done || got != Opaque {
			t.Errorf("Classify(%q) = %v, %v; want opaque, undecided", in, got, done)
		}
	}
}

// TestClassifyDecidesEarly checks that a decision is reached at the first
// byte that settles it, and never changes as bytes are added.
func TestClassifyDecidesEarly(t *testing.T) {
	for _, tc := range []struct {
		in     string
		at     int // length of the shortest deciding prefix
		expect Protocol
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n", len("GET / HTTP/1.1\r\n"), HTTP1},
		{http2Preface + "xyz", len(http2Preface), HTTP2},
		{"\x16\x03\x01", 1, Opaque},
		{"GET / HTTP/2.0\r\n", len("GET / HTTP/2"), Opaque},
		{"PRI * HTTP/2.0\r\nX", len("PRI * HTTP/2.0\r\nX"), Opaque},
		{"GET / HTTP/1.1\n", len("GET / HTTP/1.1\n"), Opaque},
	} {
		for k := 0; k <= len(tc.in); k++ {
			got, done := Classify([]byte(tc.in[:k]))
			switch {
			case k < tc.at && done:
				t.Errorf("%q: decided %v after %d bytes, want undecided until %d", tc.in, got, k, tc.at)
			case k >= tc.at && (!done || got != tc.expect):
				t.Errorf("%q[:%d]: got %v, %v; want %v, true", tc.in, k, got, done, tc.expect)
			}
		}
	}
}

// TestScannerIncremental checks that feeding the scanner a growing buffer
// gives the same answers as classifying each prefix from scratch.
func TestScannerIncremental(t *testing.T) {
	inputs := []string{strings.Repeat("a", 100) + " / HTTP/1.1\r\n"}
	for _, tc := range classifyCases {
		inputs = append(inputs, tc.in)
	}
	for _, in := range inputs {
		for _, step := range []int{1, 2, 3, 7, 16} {
			var s scanner
			for k := 0; ; k = min(k+step, len(in)) {
				gotP, gotDone := s.scan([]byte(in[:k]))
				wantP, wantDone := Classify([]byte(in[:k]))
				if gotP != wantP || gotDone != wantDone {
					t.Fatalf("%q step %d at %d: scanner %v,%v; Classify %v,%v", in, step, k, gotP, gotDone, wantP, wantDone)
				}
				if gotDone || k == len(in) {
					break
				}
			}
		}
	}
}

func TestProtocolString(t *testing.T) {
	for p, want := range map[Protocol]string{Opaque: "opaque", HTTP1: "http1", HTTP2: "http2", 9: "unknown"} {
		if got := p.String(); got != want {
			t.Errorf("Protocol(%d).String() = %q, want %q", p, got, want)
		}
	}
}

func TestClassifyAllocs(t *testing.T) {
	in := []byte("GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n")
	if n := testing.AllocsPerRun(100, func() { Classify(in) }); n != 0 {
		t.Errorf("Classify allocates %v times, want 0", n)
	}
}
