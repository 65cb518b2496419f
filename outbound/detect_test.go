package outbound

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/detect"
	"github.com/seed722d2a70/meshproxy/internal/tcptest"
	"github.com/seed722d2a70/meshproxy/ports"
)

const getRequest = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"

// speculatingProxy returns an outbound proxy that routes everything
// unmeshed, detects with timeout and speculates after grace.
func speculatingProxy(t *testing.T, timeout, grace time.Duration) *Proxy {
	t.Helper()
	tab, err := NewTable(nil, nil, ports.Set{}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := New(Config{
		Router:         NewRouter(tab),
		Detector:       detect.New(detect.Config{Timeout: timeout, Direction: detect.Outbound}),
		ServerFirst:    NewServerFirst(100, time.Hour, nil),
		SpeculateAfter: grace,
	})
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	return p
}

// upstreamServer serves each connection with serve, counting them.
func upstreamServer(t *testing.T, serve func(net.Conn)) (Target, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	addr := tcptest.Serve(t, func(c net.Conn) {
		n.Add(1)
		serve(c)
	})
	target, err := ParseTarget(addr)
	if err != nil {
		t.Fatal(err)
	}
	return target, &n
}

// detectAfter runs the outbound detect step on a connection whose client
// sends msg after delay (nothing when msg is empty) and returns what the
// step decided, closing whatever it opened.
func detectAfter(t *testing.T, p *Proxy, target Target, delay time.Duration, msg string) detected {
	t.Helper()
	route, err := p.cfg.Router.Route(target)
	if err != nil {
		t.Fatal(err)
	}
	client, server := tcptest.Pair(t)
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		if msg == "" {
			return
		}
		time.Sleep(delay)
		_, _ = client.Write([]byte(msg))
	}()
	d, err := p.detect(context.Background(), p.log, server, route)
	<-wrote
	if err != nil {
		t.Fatalf("detect: %v", err)
	}
	_ = d.conn.Close()
	if d.upstream != nil {
		_ = d.upstream.Close()
	}
	return d
}

func TestSpeculate(t *testing.T) {
	silent := func(c net.Conn) { _, _ = io.Copy(io.Discard, c) }
	greets := func(c net.Conn) {
		_, _ = c.Write([]byte("INFO {}\r\n"))
		_, _ = io.Copy(io.Discard, c)
	}
	closes := func(net.Conn) {}
	tests := []struct {
		name        string
		serve       func(net.Conn)
		delay       time.Duration
		msg         string
		dialDelay   time.Duration
		dialErr     error
		wantProto   detect.Protocol
		wantOutcome detect.Outcome
		wantLearned bool
	}{
		{name: "server greets a silent client", serve: greets, delay: 0, msg: "",
			wantProto: detect.Opaque, wantOutcome: detect.OutcomeServerFirst, wantLearned: true},
		{name: "HTTP client after the grace", serve: silent, delay: 150 * time.Millisecond, msg: getRequest,
			wantProto: detect.HTTP1, wantOutcome: detect.OutcomeHTTP1},
		// A server that only closes (its app down, say) is not server-first:
		// learning it would take HTTP handling from later clients.
		{name: "server closes without a word", serve: closes, delay: 200 * time.Millisecond, msg: getRequest,
			wantProto: detect.HTTP1, wantOutcome: detect.OutcomeHTTP1},
		// The dial runs alongside detection: a slow or failing destination
		// does not hold up, or hide, a client that sends its request.
		{name: "slow dial", serve: silent, delay: 100 * time.Millisecond, msg: getRequest, dialDelay: time.Second,
			wantProto: detect.HTTP1, wantOutcome: detect.OutcomeHTTP1},
		{name: "dial fails after the timeout", serve: silent, delay: 100 * time.Millisecond, msg: getRequest,
			dialDelay: time.Second, dialErr: syscall.ETIMEDOUT,
			wantProto: detect.HTTP1, wantOutcome: detect.OutcomeHTTP1},
		{name: "dial fails at once", serve: silent, delay: 150 * time.Millisecond, msg: getRequest, dialErr: syscall.ECONNREFUSED,
			wantProto: detect.HTTP1, wantOutcome: detect.OutcomeHTTP1},
		{name: "opaque client after the grace", serve: silent, delay: 150 * time.Millisecond, msg: "\x00\x01binary",
			wantProto: detect.Opaque, wantOutcome: detect.OutcomeOpaque},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const timeout, grace = 600 * time.Millisecond, 50 * time.Millisecond
			p := speculatingProxy(t, timeout, grace)
			target, _ := upstreamServer(t, tt.serve)
			p.dialer.ControlContext = slowDial(tt.dialDelay, tt.dialErr)
			start := time.Now()
			d := detectAfter(t, p, target, tt.delay, tt.msg)
			took := time.Since(start)
			if d.res.Protocol != tt.wantProto || d.res.Outcome != tt.wantOutcome {
				t.Errorf("detected %v (%s), want %v (%s)", d.res.Protocol, d.res.Outcome, tt.wantProto, tt.wantOutcome)
			}
			if got := p.cfg.ServerFirst.Known(target.String()); got != tt.wantLearned {
				t.Errorf("learned as server-first: %v, want %v", got, tt.wantLearned)
			}
			if tt.wantProto == detect.HTTP1 && took > tt.delay+timeout/2 {
				t.Errorf("HTTP sent after %v decided after %v: the speculative dial held detection up", tt.delay, took)
			}
			// Elapsed counts from the start of detection, grace included.
			if tt.msg != "" && d.res.Elapsed < tt.delay {
				t.Errorf("Elapsed %v, less than the %v the client took", d.res.Elapsed, tt.delay)
			}
		})
	}
}

// A client that speaks opaque bytes while the speculative dial is still
// under way gets that connection, once it is up, rather than a second one.
func TestSpeculateOpaqueWaitsForDial(t *testing.T) {
	p := speculatingProxy(t, 2*time.Second, 20*time.Millisecond)
	target, accepted := upstreamServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	p.dialer.ControlContext = slowDial(200*time.Millisecond, nil)
	d := detectAfter(t, p, target, 50*time.Millisecond, "\x00binary")
	if d.upstream == nil {
		t.Fatal("no speculative connection handed on")
	}
	if n := accepted.Load(); n > 1 {
		t.Errorf("destination accepted %d connections, want 1", n)
	}
}

// slowDial returns a dialer control function that holds every dial up for
// delay (or until it is canceled) and then fails it with err, if not nil.
func slowDial(delay time.Duration, err error) func(context.Context, string, string, syscall.RawConn) error {
	return func(ctx context.Context, _, _ string, _ syscall.RawConn) error {
		select {
		case <-time.After(delay):
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
