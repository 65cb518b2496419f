package detect

import (
	"bytes"
	"context"
	"io"
	"net"
	"regexp"
	"slices"
	"testing"
)

// The seed corpora are checked in under testdata/fuzz/<FuzzName>/; they
// include real ClientHellos captured from crypto/tls.

// classifyOracle is a slow, obviously correct restatement of Classify's
// rules with regular expressions, to compare against.
type classifyOracle struct {
	requestLine *regexp.Regexp // a complete request line at the start
	partial     *regexp.Regexp // the whole input is a prefix of a request line
}

func newClassifyOracle() classifyOracle {
	const (
		token  = "[-!#$%&'*+.^_`|~0-9A-Za-z]+"
		target = `[^\x00-\x20\x7f]+`
	)
	return classifyOracle{
		requestLine: regexp.MustCompile(`^` + token + ` ` + target + ` HTTP/1\.[01]\r\n`),
		partial:     regexp.MustCompile(`^(?:` + token + `(?: (?:` + target + `(?: (?:H(?:T(?:T(?:P(?:/(?:1(?:\.(?:[01]\r?)?)?)?)?)?)?)?)?)?)?)?)?$`),
	}
}

func (o classifyOracle) classify(b []byte) (Protocol, bool) {
	switch {
	case bytes.HasPrefix(b, []byte(http2Preface)):
		return HTTP2, true
	case o.requestLine.Match(b):
		return HTTP1, true
	case bytes.HasPrefix([]byte(http2Preface), b), o.partial.Match(b):
		return Opaque, false
	}
	return Opaque, true
}

func FuzzClassify(f *testing.F) {
	oracle := newClassifyOracle()
	f.Fuzz(func(t *testing.T, b []byte) {
		p, done := Classify(b)
		if wp, wdone := oracle.classify(b); p != wp || done != wdone {
			t.Fatalf("Classify(%q) = %v, %v; oracle says %v, %v", b, p, done, wp, wdone)
		}
		if done && p == HTTP1 && !bytes.Contains(b, []byte("\r\n")) {
			t.Fatalf("HTTP1 without CRLF: %q", b)
		}
		if len(b) > 2048 {
			return // the checks below are quadratic
		}
		// A decision on a prefix is the decision on the whole.
		for k := range len(b) {
			if kp, kdone := Classify(b[:k]); kdone && (!done || kp != p) {
				t.Fatalf("Classify(%q) = %v, but its %d-byte prefix was decided %v", b, p, k, kp)
			}
		}
		// Scanning incrementally agrees with scanning at once.
		var s scanner
		for k := 0; k <= len(b); k += 1 + k%5 {
			s.scan(b[:k])
		}
		if sp, sdone := s.scan(b); sp != p || sdone != done {
			t.Fatalf("incremental scan of %q = %v, %v; want %v, %v", b, sp, sdone, p, done)
		}
	})
}

func FuzzClientHello(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		inputs := [][]byte{b}
		if len(b) < maxRecordPayload-handshakeHeaderLen {
			inputs = append(inputs, wrapHello(b)) // reach the body parser often
		}
		for _, in := range inputs {
			hello, err := parseClientHello(in)
			switch err {
			case nil:
				checkHello(t, hello)
			case errIncomplete, errMalformed:
				if hello.serverName != "" || hello.alpn != nil {
					t.Fatalf("results with error %v", err)
				}
			default:
				t.Fatalf("unexpected error %v", err)
			}
			// An interner changes nothing reported, seen once or twice.
			var in2 interner
			for range 2 {
				ih, ierr := in2.parseClientHello(in)
				if ierr != err || ih.serverName != hello.serverName || !slices.Equal(ih.alpn, hello.alpn) {
					t.Fatalf("interned parse: %v %q %q, want %v %q %q", ierr, ih.serverName, ih.alpn, err, hello.serverName, hello.alpn)
				}
			}
			// Bytes after a verdict do not change it.
			if err != errIncomplete {
				more := append(slices.Clip(in), "\x16\x03\x01\x00\x01\x01"...)
				h2, err2 := parseClientHello(more)
				if err2 != err || h2.serverName != hello.serverName || !slices.Equal(h2.alpn, hello.alpn) {
					t.Fatalf("verdict changed by later bytes: %v %q → %v %q", err, hello.serverName, err2, h2.serverName)
				}
			}
		}
	})
}

// checkHello checks the promises about what parseClientHello reports.
func checkHello(t *testing.T, hello clientHello) {
	t.Helper()
	if len(hello.serverName) > maxHostNameLen {
		t.Fatalf("server name of %d bytes", len(hello.serverName))
	}
	for _, c := range []byte(hello.serverName) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			t.Fatalf("server name %q has byte %q", hello.serverName, c)
		}
	}
	if len(hello.alpn) > maxALPN {
		t.Fatalf("%d ALPN names", len(hello.alpn))
	}
	for _, p := range hello.alpn {
		if p == "" {
			t.Fatal("empty ALPN name")
		}
	}
}

// FuzzDetect runs Detect over net.Pipe with the data sent in two writes and
// then closed, and checks that the verdict agrees with Classify and that
// every byte is replayed.
func FuzzDetect(f *testing.F) {
	d := New(Config{Timeout: patience, BufferSize: MinBufferSize})
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		client, server := net.Pipe()
		defer server.Close()
		at := min(int(split), len(data))
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer client.Close()
			for _, chunk := range [][]byte{data[:at], data[at:]} {
				if len(chunk) > 0 {
					if _, err := client.Write(chunk); err != nil {
						return
					}
				}
			}
		}()
		res, conn, err := d.Detect(context.Background(), server)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(conn)
		<-done
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("replayed %q, %v; want %q", got, err, data)
		}
		if res.Peeked > len(data) || res.Peeked > MinBufferSize {
			t.Fatalf("peeked %d of %d", res.Peeked, len(data))
		}
		peeked := data[:res.Peeked]
		p, decided := Classify(peeked)
		switch res.Outcome {
		case OutcomeEmpty:
			if len(data) != 0 {
				t.Fatalf("empty with %d bytes sent", len(data))
			}
		case OutcomeHTTP1, OutcomeHTTP2:
			if !decided || p != res.Protocol {
				t.Fatalf("%v, but Classify(%q) = %v, %v", res.Outcome, peeked, p, decided)
			}
		case OutcomeOpaque:
			if res.Protocol != Opaque || decided && p != Opaque {
				t.Fatalf("opaque %v, but Classify(%q) = %v, %v", res.Protocol, peeked, p, decided)
			}
			if !decided && res.Peeked < len(data) && res.Peeked < MinBufferSize {
				t.Fatalf("stopped undecided after %d of %d bytes", res.Peeked, len(data))
			}
		default:
			t.Fatalf("outcome %v for a client that closes", res.Outcome)
		}
		if res.TLS {
			hello, err := parseClientHello(peeked)
			if err != nil || hello.serverName != res.SNI {
				t.Fatalf("TLS result %q but parse says %v", res.SNI, err)
			}
		}
	})
}
