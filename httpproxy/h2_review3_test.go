package httpproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/seed722d2a70/meshproxy/internal/header"
)

// Tests for the third review's findings (docs/http2-relay.md), from the
// reviewer's reproductions with grpc-go clients and servers.

// rawCodec passes gRPC messages as they are: no protobuf needed.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "raw" }

// grpcTestApp serves on a loopback port: /s.S/Hang waits until its call is
// canceled; /s.S/Echo echoes each message of a bidi stream; /s.S/Big
// answers one message of the size asked (in decimal); any other method
// echoes one message.
func grpcTestApp(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		m, _ := grpc.MethodFromServerStream(ss)
		switch m {
		case "/s.S/Hang":
			<-ss.Context().Done()
			return ss.Context().Err()
		case "/s.S/Echo":
			return echoStream(nil, ss)
		case "/s.S/Big":
			var b []byte
			if err := ss.RecvMsg(&b); err != nil {
				return err
			}
			n := 0
			for _, c := range b {
				n = n*10 + int(c-'0')
			}
			out := make([]byte, n)
			return ss.SendMsg(&out)
		}
		var b []byte
		if err := ss.RecvMsg(&b); err != nil {
			return err
		}
		return ss.SendMsg(&b)
	}))
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

func grpcTestClient(t testing.TB, addr string) *grpc.ClientConn {
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}), grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// grpcProxy relays one gRPC app, through the frame relay or through
// net/http, dialing with dial. It returns the proxy's address, and its
// server and pool for the relay.
func grpcProxy(t *testing.T, relay bool, dial func(context.Context) (net.Conn, error)) (string, *Server, *H2Pool) {
	s, _, _ := startServer(t, Config{Direction: "outbound", IdleTimeout: time.Minute})
	info := &Conn{Protocol: header.HTTP2, Upstream: "app", Labels: Labels{Direction: "outbound", TLS: "true"}}
	var pool *H2Pool
	if relay {
		pool = NewH2Pool(TransportConfig{Dial: dial})
		t.Cleanup(pool.CloseIdle)
		info.H2 = pool
	} else {
		info.Transport = newPool(NewTransport(TransportConfig{Dial: dial, Protocol: header.HTTP2}))
	}
	return serveOne(t, s, info), s, pool
}

var relayOrNetHTTP = []struct {
	name  string
	relay bool
}{{"nethttp", false}, {"relay", true}}

// relayState is the accounting of a relay's client connections and pool.
type relayState struct {
	conns, streams, held, queued int
	budget, idleBudget           int64
	connRecv, connFree           int64
	upActive                     []int
}

func snapshot(s *Server, p *H2Pool) relayState {
	var st relayState
	s.h2.mu.Lock()
	for d := range s.h2.m {
		st.conns++
		d.mu.Lock()
		st.streams += len(d.streams)
		st.held += d.held
		st.queued += len(d.queue)
		d.mu.Unlock()
		st.budget += d.respBudget.Load()
		st.idleBudget += d.respIdle.Load()
		st.connRecv += d.connRecv.Load()
		st.connFree += d.connFree.Load()
	}
	s.h2.mu.Unlock()
	p.mu.Lock()
	for _, c := range p.conns {
		c.mu.Lock()
		st.upActive = append(st.upActive, c.active)
		c.mu.Unlock()
	}
	p.mu.Unlock()
	return st
}

// Review (3rd round) #1: every client reset of a stream sent upstream drew
// on the rapid-reset budget, grpc-go's RST_STREAM(CANCEL) for an expired
// deadline too: 2 000 deadline expiries in half a second ended the client's
// connection with GOAWAY ENHANCE_YOUR_CALM, and its healthy stream with
// it. net/http's path kept the connection. A client's reset now costs
// nothing: its stream's slot, held until the upstream confirms, bounds
// what the resets make the upstream do.
func TestH2DeadlineStormKeepsConnection(t *testing.T) {
	for _, tc := range relayOrNetHTTP {
		t.Run(tc.name, func(t *testing.T) {
			addr, _, _ := grpcProxy(t, tc.relay, dialTo(grpcTestApp(t)))
			cc := grpcTestClient(t, addr)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			bidi, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/s.S/Echo")
			if err != nil {
				t.Fatal(err)
			}
			ping := func() error {
				b := []byte("x")
				if err := bidi.SendMsg(&b); err != nil {
					return err
				}
				return bidi.RecvMsg(&b)
			}
			if err := ping(); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var deadlines, other atomic.Int64
			for range 50 {
				wg.Go(func() {
					for range 40 {
						cctx, ccancel := context.WithTimeout(ctx, 5*time.Millisecond)
						in, out := []byte("h"), []byte(nil)
						err := cc.Invoke(cctx, "/s.S/Hang", &in, &out)
						ccancel()
						if status.Code(err) == codes.DeadlineExceeded {
							deadlines.Add(1)
						} else {
							other.Add(1)
						}
					}
				})
			}
			wg.Wait()
			t.Logf("deadline exceeded %d, other outcomes %d", deadlines.Load(), other.Load())
			if err := ping(); err != nil {
				t.Errorf("healthy stream broken by other calls' deadlines: %v", err)
			}
			if other.Load() > 0 {
				// net/http's path is the comparison, not under test: under
				// load a few of its calls end otherwise.
				report := t.Errorf
				if !tc.relay {
					report = t.Logf
				}
				report("%d calls failed otherwise than by their deadline", other.Load())
			}
		})
	}
}

// Review (3rd round) #2: the slots of streams reset and not yet confirmed
// upstream (up to 5 s once the reset PINGs are blocked) were invisible to
// the client, which opened new streams that the relay refused: after 500
// timed-out calls a healthy call failed UNAVAILABLE. New streams over the
// limit because of held slots now wait for a slot: every call ends by its
// deadline, as through net/http, and the healthy one succeeds.
func TestH2HeldSlotsQueueHealthyCalls(t *testing.T) {
	for _, tc := range relayOrNetHTTP {
		t.Run(tc.name, func(t *testing.T) {
			addr, s, pool := grpcProxy(t, tc.relay, dialTo(grpcTestApp(t)))
			cc := grpcTestClient(t, addr)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var other atomic.Int64
			var firstErr atomic.Value
			round := func() {
				var wg sync.WaitGroup
				for range h2MaxStreams {
					wg.Go(func() {
						cctx, ccancel := context.WithTimeout(ctx, 100*time.Millisecond)
						in, out := []byte("h"), []byte(nil)
						err := cc.Invoke(cctx, "/s.S/Hang", &in, &out)
						ccancel()
						if status.Code(err) != codes.DeadlineExceeded {
							other.Add(1)
							firstErr.CompareAndSwap(nil, err)
						}
					})
				}
				wg.Wait()
			}
			for range 3 {
				round()
			}
			if tc.relay {
				t.Logf("after three rounds: %+v", snapshot(s, pool))
			}
			if n := other.Load(); n > 0 {
				// net/http's path is the comparison, not under test: under
				// load a few of its calls end 502 (bad_gateway).
				report := t.Errorf
				if !tc.relay {
					report = t.Logf
				}
				report("%d of %d calls on a hung upstream ended otherwise than by their deadline, first: %v", n, 3*h2MaxStreams, firstErr.Load())
			}
			in, out := []byte("ok"), []byte(nil)
			if err := cc.Invoke(ctx, "/s.S/Unary", &in, &out); err != nil || string(out) != "ok" {
				t.Errorf("healthy call after three rounds of expired deadlines: %q, %v", out, err)
			}
		})
	}
}

// Review (3rd round) #3: the growth of a response window went back to
// h2RespBudget only when its stream ended: five long-lived streams that
// once carried a large message held the whole budget for as long as they
// lived, and every later stream of the client connection kept a 64 KiB
// window. An idle stream's growth now leaves the budget (for
// h2RespIdleBudget, until its window has shrunk), and a stream grows only
// as far as its flow needs.
func TestH2IdleStreamsGiveBackResponseBudget(t *testing.T) {
	addr, s, pool := grpcProxy(t, true, dialTo(grpcTestApp(t)))
	cc := grpcTestClient(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const msg = 2 << 20 // grows a window to h2StreamWindow
	echo := func(st grpc.ClientStream) {
		t.Helper()
		b := make([]byte, msg)
		if err := st.SendMsg(&b); err != nil {
			t.Fatal(err)
		}
		if err := st.RecvMsg(&b); err != nil || len(b) != msg {
			t.Fatalf("echo: %d bytes, %v", len(b), err)
		}
	}
	// As many streams as the idle budget takes whole however far their
	// windows grew (each at most h2StreamWindow-64 KiB): past that, the
	// rest of their growth stays in the main budget (docs/http2-relay.md,
	// "Left open"), and with 6 the test failed whenever the windows grew
	// all the way (under load).
	n := int(h2RespIdleBudget / (h2StreamWindow - 64<<10))
	var streams []grpc.ClientStream
	for range n {
		st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/s.S/Echo")
		if err != nil {
			t.Fatal(err)
		}
		echo(st)
		streams = append(streams, st) // left open, idle, as a watch would be
	}
	var st relayState
	idle := waitFor(func() bool {
		st = snapshot(s, pool)
		return st.budget == h2RespBudget
	})
	t.Logf("%d idle streams that carried %d bytes each: %+v", n, msg, st)
	if !idle {
		t.Errorf("%d idle streams hold %d of the response budget, want it all back", n, h2RespBudget-st.budget)
	}
	// A window given is not taken back: the idle streams' growth is still
	// accounted for, in the idle budget or the main one.
	if held := 2*h2RespBudget - st.budget - st.idleBudget; held <= 0 {
		t.Errorf("the idle streams' windows hold nothing: %+v", st)
	}
	// The idle streams carry large messages again: their windows shrink
	// then grow, and nothing stalls.
	for _, st := range streams {
		echo(st)
	}
	for _, st := range streams {
		if err := st.CloseSend(); err != nil {
			t.Fatal(err)
		}
		var b []byte
		if err := st.RecvMsg(&b); !errors.Is(err, io.EOF) {
			t.Fatalf("end of stream: %v", err)
		}
	}
	if !waitFor(func() bool {
		st = snapshot(s, pool)
		return st.streams == 0 && st.budget == h2RespBudget && st.idleBudget == h2RespIdleBudget
	}) {
		t.Errorf("budgets not back once the streams ended: %+v", st)
	}
}

// After a mixed load of every kind of ending, the relay's accounting is
// back at rest: no streams, none held or queued, both response budgets
// full, the whole connection window, no upstream slot taken. (The
// reviewer's check, now with the queue and the idle budget.)
func TestH2AccountingAtRestAfterMixedLoad(t *testing.T) {
	addr, s, pool := grpcProxy(t, true, dialTo(grpcTestApp(t)))
	cc := grpcTestClient(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for g := range 20 {
		wg.Go(func() {
			for i := range 10 {
				switch (g + i) % 5 {
				case 0: // a large response
					in, out := []byte("3000000"), []byte(nil)
					if err := cc.Invoke(ctx, "/s.S/Big", &in, &out); err != nil || len(out) != 3000000 {
						t.Errorf("big: %v %d", err, len(out))
					}
				case 1: // a large request, echoed
					in, out := make([]byte, 2<<20), []byte(nil)
					if err := cc.Invoke(ctx, "/s.S/Unary", &in, &out); err != nil || len(out) != 2<<20 {
						t.Errorf("echo: %v %d", err, len(out))
					}
				case 2: // canceled mid-upload
					cctx, ccancel := context.WithCancel(ctx)
					st, err := cc.NewStream(cctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/s.S/Echo")
					if err == nil {
						b := make([]byte, 300<<10)
						_ = st.SendMsg(&b)
						_ = st.RecvMsg(&b)
						_ = st.SendMsg(&b)
					}
					ccancel()
				case 3: // the deadline of a hung call
					cctx, ccancel := context.WithTimeout(ctx, 20*time.Millisecond)
					in, out := []byte("h"), []byte(nil)
					_ = cc.Invoke(cctx, "/s.S/Hang", &in, &out)
					ccancel()
				case 4: // bidi with large messages, ended after the answers
					st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/s.S/Echo")
					if err != nil {
						t.Error(err)
						return
					}
					for range 3 {
						b := make([]byte, 500<<10)
						if err := st.SendMsg(&b); err != nil {
							t.Error(err)
						}
						if err := st.RecvMsg(&b); err != nil {
							t.Error(err)
						}
					}
					_ = st.CloseSend()
					var b []byte
					if err := st.RecvMsg(&b); !errors.Is(err, io.EOF) {
						t.Errorf("bidi end: %v", err)
					}
				}
			}
		})
	}
	wg.Wait()
	var st relayState
	ok := waitFor(func() bool {
		st = snapshot(s, pool)
		for _, a := range st.upActive {
			if a != 0 {
				return false
			}
		}
		return st.streams == 0 && st.held == 0 && st.queued == 0 && st.budget == h2RespBudget &&
			st.idleBudget == h2RespIdleBudget && st.connRecv+st.connFree == h2ConnWindow
	})
	t.Logf("state %+v", st)
	if !ok {
		t.Errorf("accounting not back at rest: %+v", st)
	}
}

// An idle stream's window shrinks only by not being renewed: its upstream
// may still send all the window it was given, which the relay takes (no
// FLOW_CONTROL_ERROR) and passes on whole, and the stream goes on past it
// without stalling, its growth back in the budgets once it ends.
func TestH2IdleWindowShrinksWithoutTakingBack(t *testing.T) {
	const first, after = 2 << 20, 2 << 20
	given := make(chan int64, 1)
	goOn := make(chan struct{})
	up := rawH2Server(t, nil, func(u *rawH2) {
		_ = u.c.SetDeadline(time.Now().Add(time.Minute))
		snd, id := answerFirstRequest(u)
		snd.fill(first, id)
		for snd.sync() {
		}
		w := snd.win[id]
		given <- w
		select {
		case <-goOn:
		case <-time.After(30 * time.Second):
			return
		}
		// All the window it was given, at once, then more as it comes.
		chunk := make([]byte, 16<<10)
		for rem := w; rem > 0; rem -= min(rem, int64(len(chunk))) {
			_ = u.fr.WriteData(id, false, chunk[:min(rem, int64(len(chunk)))])
		}
		snd.win[id], snd.conn = 0, snd.conn-w
		snd.fill(after, id)
		_ = u.fr.WriteData(id, true, nil)
		u.next(func(http2.Frame) bool { return false })
	})
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	_ = c.c.SetDeadline(time.Now().Add(time.Minute))
	_ = c.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	c.get(1, "/")
	type result struct {
		n   int64
		end http2.Frame
	}
	got := make(chan result, 1)
	go func() {
		var n int64
		end := c.next(func(f http2.Frame) bool {
			switch f := f.(type) {
			case *http2.DataFrame:
				n += int64(len(f.Data()))
				return f.StreamEnded()
			case *http2.RSTStreamFrame, *http2.GoAwayFrame:
				return true
			}
			return false
		})
		got <- result{n, end}
	}()
	w := <-given
	t.Logf("the upstream's window after %d bytes: %d", first, w)
	if w <= h2UpStreamWindow {
		t.Fatalf("the upstream has a window of %d after %d bytes, want it grown past %d", w, first, h2UpStreamWindow)
	}
	shrinking := func() bool {
		rl.srv.h2.mu.Lock()
		defer rl.srv.h2.mu.Unlock()
		for d := range rl.srv.h2.m {
			if s := d.lookup(1); s != nil {
				s.mu.Lock()
				defer s.mu.Unlock()
				return s.respShrink
			}
		}
		return false
	}
	if !waitFor(shrinking) {
		t.Fatal("the idle stream's window is not shrinking")
	}
	close(goOn)
	var r result
	select {
	case r = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("the response did not end")
	}
	if d, ok := r.end.(*http2.DataFrame); !ok || !d.StreamEnded() {
		t.Fatalf("the response ended with %v", r.end)
	}
	if want := first + w + after; r.n != want {
		t.Errorf("the client got %d bytes, want %d (%d, the idle window %d, then %d)", r.n, want, first, w, after)
	}
	st := snapshot(rl.srv, rl.pool)
	if !waitFor(func() bool {
		st = snapshot(rl.srv, rl.pool)
		return st.budget == h2RespBudget && st.idleBudget == h2RespIdleBudget
	}) {
		t.Errorf("budgets not back once the stream ended: %+v", st)
	}
}
