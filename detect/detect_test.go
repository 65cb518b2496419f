package detect

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/seed722d2a70/meshproxy/internal/tcptest"
)

// patience is the detection timeout in tests that must not time out: long
// enough for a loaded CI machine, short enough to fail quickly.
const patience = 5 * time.Second

// shortestDecision returns the length of the shortest prefix of in that
// settles detection, or len(in)+1 if none: Classify decides, and a TLS
// handshake record is no longer an incomplete ClientHello.
func shortestDecision(in []byte) int {
	for k := 0; k <= len(in); k++ {
		_, done := Classify(in[:k])
		if done && in[0] == recordTypeHandshake {
			_, err := parseClientHello(in[:k])
			done = err != errIncomplete
		}
		if done {
			return k
		}
	}
	return len(in) + 1
}

// TestDetectDecidesWithoutWaiting runs the decisive inputs over real TCP and
// over net.Pipe, whole and one byte at a time. The client never closes, so a
// detector that waited for more than the deciding bytes would time out.
func TestDetectDecidesWithoutWaiting(t *testing.T) {
	type testCase struct {
		name string
		in   string
		want Protocol
	}
	cases := []testCase{
		{"over-long request line", "GET /" + strings.Repeat("a", 9000) + " HTTP/1.1\r\n", Opaque},
	}
	for _, tc := range classifyCases {
		cases = append(cases, testCase{tc.name, tc.in, tc.want})
	}
	d := New(Config{Timeout: patience, Direction: Outbound})
	for _, tc := range cases {
		in := []byte(tc.in)
		for _, mode := range []string{"tcp", "pipe", "pipe bytewise"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				var client, server net.Conn
				if mode == "tcp" {
					client, server = tcptest.Pair(t)
				} else {
					client, server = net.Pipe()
					defer client.Close()
					defer server.Close()
				}
				chunks := [][]byte{in}
				if mode == "pipe bytewise" {
					chunks = byteChunks(in)
				}
				werr := writeAsync(client, chunks...)

				res, conn, err := d.Detect(context.Background(), server)
				if err != nil {
					t.Fatal(err)
				}
				wantOutcome := outcomeOf(tc.want)
				if res.Protocol != tc.want || res.Outcome != wantOutcome {
					t.Fatalf("got %v/%v, want %v/%v", res.Protocol, res.Outcome, tc.want, wantOutcome)
				}
				switch {
				case len(in) > DefaultBufferSize:
					if res.Peeked != DefaultBufferSize {
						t.Errorf("peeked %d, want the whole buffer %d", res.Peeked, DefaultBufferSize)
					}
				case mode == "pipe bytewise":
					if want := shortestDecision(in); res.Peeked != want {
						t.Errorf("peeked %d bytes, want %d: detection must stop at the deciding byte", res.Peeked, want)
					}
				case res.Peeked < 1 || res.Peeked > len(in):
					t.Errorf("peeked %d of %d bytes", res.Peeked, len(in))
				}
				got := make([]byte, len(in))
				if _, err := io.ReadFull(conn, got); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, in) {
					t.Fatalf("replayed %q, want %q", got, in)
				}
				if err := <-werr; err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

func TestDetectTLSClientHello(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      *tls.Config
		wantSNI  string
		wantALPN []string
	}{
		{"SNI and ALPN", &tls.Config{ServerName: "Web.Example.com", NextProtos: []string{"h2", "http/1.1"}}, "web.example.com", []string{"h2", "http/1.1"}},
		{"TLS 1.2, no ALPN", &tls.Config{ServerName: "db.svc.cluster.local", MaxVersion: tls.VersionTLS12}, "db.svc.cluster.local", nil},
		{"no SNI", &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"grpc"}}, "", []string{"grpc"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := tcptest.Pair(t)
			hsErr := make(chan error, 1)
			go func() { hsErr <- tls.Client(client, tc.cfg).Handshake() }()

			res, conn, err := New(Config{Timeout: patience}).Detect(context.Background(), server)
			if err != nil {
				t.Fatal(err)
			}
			if res.Protocol != Opaque || res.Outcome != OutcomeOpaque || !res.TLS {
				t.Errorf("got %v/%v TLS=%v, want opaque/opaque TLS=true", res.Protocol, res.Outcome, res.TLS)
			}
			if res.SNI != tc.wantSNI || !slices.Equal(res.ALPN, tc.wantALPN) {
				t.Errorf("got SNI %q ALPN %q, want %q %q", res.SNI, res.ALPN, tc.wantSNI, tc.wantALPN)
			}
			// The ClientHello is replayed whole to the next reader.
			got := make([]byte, res.Peeked)
			if _, err := io.ReadFull(conn, got); err != nil {
				t.Fatal(err)
			}
			if _, err := parseClientHello(got); err != nil {
				t.Errorf("replayed bytes are not the ClientHello: %v", err)
			}
			conn.Close()
			if err := <-hsErr; err == nil {
				t.Error("handshake against a closed peer succeeded")
			}
		})
	}
}

// TestDetectTLSByteAtATime checks that detection waits for the rest of a
// ClientHello that arrives slowly, and ends at once for a malformed one.
func TestDetectTLSByteAtATime(t *testing.T) {
	hello := captureClientHello(t, &tls.Config{ServerName: "example.com", NextProtos: []string{"h2"}})
	for _, tc := range []struct {
		name    string
		in      []byte
		wantTLS bool
		peeked  int
	}{
		{"whole ClientHello", hello, true, len(hello)},
		{"fragmented ClientHello", fragment(hello, 64), true, len(fragment(hello, 64))},
		{"server hello", []byte("\x16\x03\x03\x00\x04\x02\x00\x00\x00"), false, 6},
		{"bad record version", []byte("\x16\x03\x09"), false, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			defer server.Close()
			werr := writeAsync(client, byteChunks(tc.in)...)
			res, conn, err := New(Config{Timeout: patience}).Detect(context.Background(), server)
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome != OutcomeOpaque || res.TLS != tc.wantTLS || res.Peeked != tc.peeked {
				t.Fatalf("got %v TLS=%v peeked %d, want opaque TLS=%v peeked %d", res.Outcome, res.TLS, res.Peeked, tc.wantTLS, tc.peeked)
			}
			if tc.wantTLS && res.SNI != "example.com" {
				t.Errorf("SNI %q", res.SNI)
			}
			got := make([]byte, len(tc.in))
			if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, tc.in) {
				t.Fatalf("replay: %q, %v", got, err)
			}
			if err := <-werr; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDetectTimeout covers server-first protocols (the client sends nothing)
// and clients that stall in the middle of a request line.
func TestDetectTimeout(t *testing.T) {
	const timeout = 50 * time.Millisecond
	for _, tc := range []struct {
		name string
		sent string
	}{
		{"server first", ""},
		{"stalled request line", "GET / HTTP/1.1"},
		{"stalled preface", "PRI * HTTP/2.0\r\n"},
		{"stalled ClientHello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := tcptest.Pair(t)
			if tc.sent != "" {
				if _, err := client.Write([]byte(tc.sent)); err != nil {
					t.Fatal(err)
				}
			}
			core, logs := observer.New(zapcore.DebugLevel)
			d := New(Config{Timeout: timeout, Direction: Inbound, Logger: zap.New(core)})

			res, conn, err := d.Detect(context.Background(), server)
			if err != nil {
				t.Fatal(err)
			}
			if res.Protocol != Opaque || res.Outcome != OutcomeTimeout || res.TLS {
				t.Fatalf("got %v/%v TLS=%v, want opaque/timeout", res.Protocol, res.Outcome, res.TLS)
			}
			if res.Peeked != len(tc.sent) {
				t.Errorf("peeked %d, want %d", res.Peeked, len(tc.sent))
			}
			if res.Elapsed < timeout {
				t.Errorf("gave up after %v, before the %v timeout", res.Elapsed, timeout)
			}
			if tc.sent == "" && conn != net.Conn(server) {
				t.Errorf("nothing to replay, but the conn was wrapped in %T", conn)
			}
			entries := logs.FilterMessage("protocol detection timed out after 50ms").All()
			if len(entries) != 1 || entries[0].Level != zapcore.InfoLevel {
				t.Fatalf("want one info log, got %v", logs.All())
			}
			if f := entries[0].ContextMap(); f["direction"] != Inbound || f["peeked"] != int64(len(tc.sent)) {
				t.Errorf("log fields %v", f)
			}

			// The connection goes on, with the detection deadline cleared.
			if _, err := client.Write([]byte("late")); err != nil {
				t.Fatal(err)
			}
			want := tc.sent + "late"
			got := make([]byte, len(want))
			if _, err := io.ReadFull(conn, got); err != nil || string(got) != want {
				t.Fatalf("read %q, %v; want %q", got, err, want)
			}
		})
	}
}

func TestDetectTimeoutMessage(t *testing.T) {
	for _, tc := range []struct {
		timeout time.Duration
		want    string
	}{
		{0, "protocol detection timed out after 10s"},
		{time.Second, "protocol detection timed out after 1s"},
		{1500 * time.Millisecond, "protocol detection timed out after 1.5s"},
	} {
		d := New(Config{Timeout: tc.timeout})
		if d.timeoutMsg != tc.want {
			t.Errorf("Timeout %v: message %q, want %q", tc.timeout, d.timeoutMsg, tc.want)
		}
	}
	if got := New(Config{}).Timeout(); got != DefaultTimeout {
		t.Errorf("default Timeout() = %v", got)
	}
}

// TestDetectClientClosesFirst covers clients that close or half-close before
// detection ends: the end of stream must reach the next reader after any
// bytes, and the other direction must stay open after a half-close.
func TestDetectClientClosesFirst(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sent    string
		full    bool // Close rather than CloseWrite
		want    Protocol
		outcome Outcome
	}{
		{"close before sending", "", true, Opaque, OutcomeEmpty},
		{"half-close before sending", "", false, Opaque, OutcomeEmpty},
		{"half-close after an undecided prefix", "hello", false, Opaque, OutcomeOpaque},
		{"half-close after a request line", "GET / HTTP/1.1\r\n", false, HTTP1, OutcomeHTTP1},
		{"half-close after the preface", http2Preface, false, HTTP2, OutcomeHTTP2},
		{"half-close after opaque bytes", "\x00\x01\x02", false, Opaque, OutcomeOpaque},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := tcptest.Pair(t)
			if _, err := client.Write([]byte(tc.sent)); err != nil {
				t.Fatal(err)
			}
			if tc.full {
				client.Close()
			} else if err := client.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			res, conn, err := New(Config{Timeout: patience}).Detect(context.Background(), server)
			if err != nil {
				t.Fatal(err)
			}
			if res.Protocol != tc.want || res.Outcome != tc.outcome {
				t.Fatalf("got %v/%v, want %v/%v", res.Protocol, res.Outcome, tc.want, tc.outcome)
			}
			got, err := io.ReadAll(conn) // reads until io.EOF
			if err != nil || string(got) != tc.sent {
				t.Fatalf("read %q, %v; want %q then EOF", got, err, tc.sent)
			}
			if n, err := conn.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("read after EOF: %d, %v", n, err)
			}
			if tc.full {
				return
			}
			if _, err := conn.Write([]byte("pong")); err != nil {
				t.Fatal(err)
			}
			if err := conn.Close(); err != nil {
				t.Fatal(err)
			}
			if got, err := io.ReadAll(client); err != nil || string(got) != "pong" {
				t.Fatalf("client read %q, %v", got, err)
			}
		})
	}
}

// TestDetectResetBeforeData checks that a connection reset before any byte
// is not an error of Detect: it is empty, and the reset reaches the reader.
func TestDetectResetBeforeData(t *testing.T) {
	client, server := tcptest.Pair(t)
	if err := client.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	client.Close() // sends RST
	res, conn, err := New(Config{Timeout: patience}).Detect(context.Background(), server)
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != OutcomeEmpty || res.Peeked != 0 {
		t.Fatalf("got %v peeked %d, want empty", res.Outcome, res.Peeked)
	}
	if _, err := conn.Read(make([]byte, 1)); err == nil || err == io.EOF {
		t.Fatalf("read after reset: %v, want the reset error", err)
	}
}

func TestDetectContext(t *testing.T) {
	t.Run("canceled while waiting", func(t *testing.T) {
		client, server := tcptest.Pair(t)
		ctx, cancel := context.WithCancel(context.Background())
		if _, err := client.Write([]byte("GET")); err != nil {
			t.Fatal(err)
		}
		go func() {
			time.Sleep(20 * time.Millisecond)
			cancel()
		}()
		res, conn, err := New(Config{Timeout: patience}).Detect(ctx, server)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if res.Peeked != 3 {
			t.Errorf("peeked %d, want 3", res.Peeked)
		}
		// The bytes are still there and the deadline was cleared.
		if _, err := client.Write([]byte(" /")); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 5)
		if _, err := io.ReadFull(conn, got); err != nil || string(got) != "GET /" {
			t.Fatalf("read %q, %v", got, err)
		}
	})
	t.Run("canceled before", func(t *testing.T) {
		_, server := tcptest.Pair(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, conn, err := New(Config{}).Detect(ctx, server)
		if !errors.Is(err, context.Canceled) || conn != net.Conn(server) {
			t.Fatalf("got %v, %T", err, conn)
		}
	})
	t.Run("deadline before timeout", func(t *testing.T) {
		_, server := tcptest.Pair(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		core, logs := observer.New(zapcore.DebugLevel)
		_, _, err := New(Config{Timeout: patience, Logger: zap.New(core)}).Detect(ctx, server)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want context.DeadlineExceeded", err)
		}
		if logs.Len() != 0 {
			t.Errorf("logged %v for a context deadline", logs.All())
		}
	})
	t.Run("done after decision", func(t *testing.T) {
		client, server := tcptest.Pair(t)
		ctx, cancel := context.WithCancel(context.Background())
		if _, err := client.Write([]byte("\x00")); err != nil {
			t.Fatal(err)
		}
		res, conn, err := New(Config{Timeout: patience}).Detect(ctx, server)
		cancel() // must not disturb the returned conn
		if err != nil || res.Outcome != OutcomeOpaque {
			t.Fatalf("got %v, %v", res.Outcome, err)
		}
		if _, err := client.Write([]byte("\x01")); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 2)
		if _, err := io.ReadFull(conn, got); err != nil || string(got) != "\x00\x01" {
			t.Fatalf("read %q, %v", got, err)
		}
	})
}

// TestDetectClearsDeadline checks that the detection deadline does not
// outlive detection: a read long after the timeout still waits for data.
func TestDetectClearsDeadline(t *testing.T) {
	const timeout = 20 * time.Millisecond
	client, server := tcptest.Pair(t)
	if _, err := client.Write([]byte("GET / HTTP/1.1\r\n")); err != nil {
		t.Fatal(err)
	}
	res, conn, err := New(Config{Timeout: timeout}).Detect(context.Background(), server)
	if err != nil || res.Protocol != HTTP1 {
		t.Fatalf("got %v, %v", res.Protocol, err)
	}
	if _, err := io.ReadFull(conn, make([]byte, res.Peeked)); err != nil {
		t.Fatal(err)
	}
	werr := make(chan error, 1)
	go func() {
		time.Sleep(5 * timeout) // well past the detection deadline
		_, err := client.Write([]byte("Host: a\r\n"))
		werr <- err
	}()
	got := make([]byte, 9)
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != "Host: a\r\n" {
		t.Fatalf("read %q, %v: the detection deadline was left on the conn", got, err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
}

func TestNewBufferSize(t *testing.T) {
	for _, tc := range []struct{ in, want int }{{0, DefaultBufferSize}, {-1, DefaultBufferSize}, {1, MinBufferSize}, {100, 100}} {
		if got := New(Config{BufferSize: tc.in}).bufferSize; got != tc.want {
			t.Errorf("BufferSize %d: got %d, want %d", tc.in, got, tc.want)
		}
	}
	// A small buffer bounds what is read: a longer line is opaque.
	client, server := tcptest.Pair(t)
	line := "GET /" + strings.Repeat("x", 100) + " HTTP/1.1\r\n"
	if _, err := client.Write([]byte(line)); err != nil {
		t.Fatal(err)
	}
	res, conn, err := New(Config{BufferSize: 64, Timeout: patience}).Detect(context.Background(), server)
	if err != nil || res.Outcome != OutcomeOpaque || res.Peeked != 64 {
		t.Fatalf("got %v peeked %d, %v", res.Outcome, res.Peeked, err)
	}
	got := make([]byte, len(line))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != line {
		t.Fatalf("read %q, %v", got, err)
	}
}
