package duplex

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var errUnsupported = fmt.Errorf("test wrapper: %w", errors.ErrUnsupported)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var legKinds = [][2]string{{"tcp", "tcp"}, {"tls", "tcp"}, {"tcp", "tls"}, {"tls", "tls"}}

type joinResult struct {
	st  Stats
	err error
}

// startJoin runs Join on the inner ends of a and b in the background.
func startJoin(ctx context.Context, a, b leg, opt Options) <-chan joinResult {
	ch := make(chan joinResult, 1)
	go func() {
		st, err := Join(ctx, a.inner, b.inner, opt)
		ch <- joinResult{st, err}
	}()
	return ch
}

// send writes p to c and then half-closes c, in the background.
func send(c net.Conn, p []byte) <-chan error {
	ch := make(chan error, 1)
	go func() {
		if _, err := c.Write(p); err != nil {
			ch <- err
			return
		}
		ch <- c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	return ch
}

func randomBytes(tb testing.TB, n int) []byte {
	tb.Helper()
	p := make([]byte, n)
	if _, err := rand.Read(p); err != nil {
		tb.Fatal(err)
	}
	return p
}

// readAll reads c to EOF with a generous deadline, so that a broken join
// fails the test instead of hanging it.
func readAll(tb testing.TB, c net.Conn) []byte {
	tb.Helper()
	p, err := readToEOF(c)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// readToEOF is readAll for goroutines other than the test's.
func readToEOF(c net.Conn) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	p, err := io.ReadAll(c)
	if err != nil {
		return p, fmt.Errorf("reading %v: %w", c.LocalAddr(), err)
	}
	return p, nil
}

func TestJoinCopiesBothWays(t *testing.T) {
	for _, kinds := range legKinds {
		t.Run(kinds[0]+"-"+kinds[1], func(t *testing.T) {
			a, b := newLeg(t, kinds[0]), newLeg(t, kinds[1])
			pool := NewBufferPool(0)
			done := startJoin(context.Background(), a, b, Options{Pool: pool})

			up, down := randomBytes(t, 1<<20), randomBytes(t, 1<<20)
			upSent, downSent := send(a.outer, up), send(b.outer, down)
			var gotDown []byte
			var downErr error
			var wg sync.WaitGroup
			wg.Go(func() { gotDown, downErr = readToEOF(a.outer) })
			gotUp, upErr := readToEOF(b.outer)
			wg.Wait()
			if upErr != nil || downErr != nil {
				t.Fatalf("reading: %v, %v", upErr, downErr)
			}

			if err := <-upSent; err != nil {
				t.Fatalf("sending a to b: %v", err)
			}
			if err := <-downSent; err != nil {
				t.Fatalf("sending b to a: %v", err)
			}
			if !bytes.Equal(gotUp, up) {
				t.Errorf("b received %d bytes that differ from the %d a sent", len(gotUp), len(up))
			}
			if !bytes.Equal(gotDown, down) {
				t.Errorf("a received %d bytes that differ from the %d b sent", len(gotDown), len(down))
			}
			res := <-done
			if res.err != nil {
				t.Errorf("Join error = %v, want nil", res.err)
			}
			if want := (Stats{AToB: 1 << 20, BToA: 1 << 20}); res.st != want {
				t.Errorf("Join stats = %+v, want %+v", res.st, want)
			}
		})
	}
}

// TestJoinCarriesHalfClose checks that a side that ends its stream is seen to
// do so by the far peer, which can still answer in full.
func TestJoinCarriesHalfClose(t *testing.T) {
	for _, kinds := range legKinds {
		for _, first := range []string{"a", "b"} {
			t.Run(kinds[0]+"-"+kinds[1]+"/"+first+" closes first", func(t *testing.T) {
				a, b := newLeg(t, kinds[0]), newLeg(t, kinds[1])
				done := startJoin(context.Background(), a, b, Options{})
				client, server := a, b
				if first == "b" {
					client, server = b, a
				}
				request, response := []byte("request, then EOF"), randomBytes(t, 256<<10)
				if err := <-send(client.outer, request); err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, server.outer); !bytes.Equal(got, request) {
					t.Fatalf("server read %q up to EOF, want %q", got, request)
				}
				responseSent := send(server.outer, response)
				if got := readAll(t, client.outer); !bytes.Equal(got, response) {
					t.Fatalf("client read %d bytes after its half-close, want the %d-byte response", len(got), len(response))
				}
				if err := <-responseSent; err != nil {
					t.Fatal(err)
				}
				res := <-done
				if res.err != nil {
					t.Errorf("Join error = %v, want nil", res.err)
				}
				want := Stats{AToB: int64(len(request)), BToA: int64(len(response))}
				if first == "b" {
					want = Stats{AToB: int64(len(response)), BToA: int64(len(request))}
				}
				if res.st != want {
					t.Errorf("Join stats = %+v, want %+v", res.st, want)
				}
			})
		}
	}
}

// TestJoinResetClosesBoth checks that a reset on one side closes the other at
// once, instead of leaving its peer waiting.
func TestJoinResetClosesBoth(t *testing.T) {
	for _, kinds := range legKinds {
		for _, reset := range []string{"a", "b"} {
			t.Run(kinds[0]+"-"+kinds[1]+"/reset "+reset, func(t *testing.T) {
				a, b := newLeg(t, kinds[0]), newLeg(t, kinds[1])
				done := startJoin(context.Background(), a, b, Options{})
				victim, other := a, b
				if reset == "b" {
					victim, other = b, a
				}
				// One byte through first, so both copies are known to run.
				if _, err := victim.outer.Write([]byte{1}); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(other.outer, make([]byte, 1)); err != nil {
					t.Fatal(err)
				}
				if err := victim.raw.SetLinger(0); err != nil {
					t.Fatal(err)
				}
				_ = victim.raw.Close() // sends RST

				_ = other.outer.SetReadDeadline(time.Now().Add(30 * time.Second))
				_, err := other.outer.Read(make([]byte, 1))
				var ne net.Error
				if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
					t.Fatalf("the other peer's read returned %v, want the end of the connection", err)
				}
				res := <-done
				if !errors.Is(res.err, syscall.ECONNRESET) {
					t.Errorf("Join error = %v, want ECONNRESET", res.err)
				}
			})
		}
	}
}

func TestJoinContextCancelClosesBoth(t *testing.T) {
	for _, kinds := range legKinds {
		t.Run(kinds[0]+"-"+kinds[1], func(t *testing.T) {
			a, b := newLeg(t, kinds[0]), newLeg(t, kinds[1])
			ctx, cancel := context.WithCancel(context.Background())
			done := startJoin(ctx, a, b, Options{})
			if _, err := a.outer.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(b.outer, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			cancel()
			res := <-done
			if !errors.Is(res.err, context.Canceled) {
				t.Errorf("Join error = %v, want context.Canceled", res.err)
			}
			if res.st.AToB != 1 {
				t.Errorf("Join stats = %+v, want 1 byte from a to b", res.st)
			}
			for name, l := range map[string]leg{"a": a, "b": b} {
				_ = l.outer.SetReadDeadline(time.Now().Add(30 * time.Second))
				_, err := l.outer.Read(make([]byte, 1))
				var ne net.Error
				if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
					t.Errorf("peer %s read returned %v after cancel, want the end of the connection", name, err)
				}
			}
		})
	}
}

func TestJoinContextAlreadyDone(t *testing.T) {
	a, b := newLeg(t, "tcp"), newLeg(t, "tcp")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Join(ctx, a.inner, b.inner, Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Join error = %v, want context.Canceled", err)
	}
}

// TestJoinHalfCloseTimeout checks that after one direction ends, a peer that
// never ends the other is cut off after the timeout.
func TestJoinHalfCloseTimeout(t *testing.T) {
	for _, kinds := range [][2]string{{"tcp", "tcp"}, {"tls", "tls"}} {
		t.Run(kinds[0]+"-"+kinds[1], func(t *testing.T) {
			a, b := newLeg(t, kinds[0]), newLeg(t, kinds[1])
			done := startJoin(context.Background(), a, b, Options{HalfCloseTimeout: 20 * time.Millisecond})
			if err := <-send(a.outer, []byte("bye")); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, b.outer); string(got) != "bye" {
				t.Fatalf("b read %q, want bye", got)
			}
			// b never closes its side; the join must end anyway.
			res := <-done
			if !errors.Is(res.err, ErrHalfCloseTimeout) {
				t.Errorf("Join error = %v, want ErrHalfCloseTimeout", res.err)
			}
			if got := readAll(t, a.outer); len(got) != 0 {
				t.Errorf("a read %q, want EOF", got)
			}
		})
	}
}

// TestJoinWithoutCloseWrite checks that a conn that cannot half-close is left
// open for the direction still flowing, rather than closed.
func TestJoinWithoutCloseWrite(t *testing.T) {
	wrappers := map[string]func(net.Conn) net.Conn{
		"no CloseWrite":          func(c net.Conn) net.Conn { return noCloseWrite{c} },
		"unsupported CloseWrite": func(c net.Conn) net.Conn { return unsupportedCloseWrite{c} },
	}
	for name, wrap := range wrappers {
		t.Run(name, func(t *testing.T) {
			a, b := newLeg(t, "tcp"), newLeg(t, "tcp")
			b.inner = wrap(b.inner)
			done := startJoin(context.Background(), a, b, Options{})
			if err := <-send(a.outer, []byte("request")); err != nil {
				t.Fatal(err)
			}
			// b cannot be told of the end, but gets the bytes and can answer.
			if _, err := io.ReadFull(b.outer, make([]byte, len("request"))); err != nil {
				t.Fatal(err)
			}
			if err := <-send(b.outer, []byte("response")); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, a.outer); string(got) != "response" {
				t.Errorf("a read %q, want response", got)
			}
			if res := <-done; res.err != nil {
				t.Errorf("Join error = %v, want nil", res.err)
			}
			if got := readAll(t, b.outer); len(got) != 0 {
				t.Errorf("b read %q after the join, want EOF", got)
			}
		})
	}
}

func TestSplices(t *testing.T) {
	tcp := newLeg(t, "tcp").inner
	tlsConn := newLeg(t, "tls").inner
	tests := []struct {
		name string
		c    net.Conn
		want bool
	}{
		{"tcp", tcp, true},
		{"tls", tlsConn, false},
		{"wrapper without Unwrap", noCloseWrite{tcp}, false},
		{"unwrapping to tcp", unwrapping{tcp}, true},
		{"unwrapping twice to tcp", unwrapping{unwrapping{tcp}}, true},
		{"unwrapping to tls", unwrapping{tlsConn}, false},
		{"unwrapping to itself", &selfUnwrapping{tcp}, false},
	}
	for _, tt := range tests {
		if got := splices(tt.c); got != tt.want {
			t.Errorf("splices(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
	if _, ok := tlsConn.(*tls.Conn); !ok {
		t.Fatal("the tls leg is not a *tls.Conn")
	}
}

func TestBufferPool(t *testing.T) {
	for _, tt := range []struct {
		p    *BufferPool
		want int
	}{{NewBufferPool(0), DefaultBufferSize}, {NewBufferPool(-1), DefaultBufferSize}, {NewBufferPool(100), 100}, {nil, DefaultBufferSize}} {
		b := tt.p.Get()
		if len(*b) != tt.want {
			t.Errorf("Get returned %d bytes, want %d", len(*b), tt.want)
		}
		tt.p.Put(b)
		tt.p.Put(nil)
	}
	p := NewBufferPool(100)
	other := make([]byte, 50)
	p.Put(&other) // dropped: wrong size
	if b := p.Get(); len(*b) != 100 {
		t.Errorf("Get after Put of a foreign buffer returned %d bytes, want 100", len(*b))
	}
}
