package detect

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/internal/tcptest"
)

// detectTCP sends sent from a fresh TCP client and returns the detected
// server side, which must be a *Conn.
func detectTCP(t *testing.T, sent []byte) (client *net.TCPConn, rc *Conn, res Result) {
	t.Helper()
	client, server := tcptest.Pair(t)
	if _, err := client.Write(sent); err != nil {
		t.Fatal(err)
	}
	res, conn, err := New(Config{Timeout: patience}).Detect(context.Background(), server)
	if err != nil {
		t.Fatal(err)
	}
	rc, ok := conn.(*Conn)
	if !ok {
		t.Fatalf("Detect returned %T, want *Conn", conn)
	}
	return client, rc, res
}

// TestConnReplayExact sends random data of many sizes (so with every kind of
// first byte) and checks every byte comes back once, in order, through Read
// with small buffers, io.ReadAll, and io.Copy into another TCP conn (the
// WriteTo path).
func TestConnReplayExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	inputs := map[string][]byte{
		"random small":  random(7),
		"random large":  random(300 << 10),
		"http then lot": append([]byte("POST /upload HTTP/1.1\r\nContent-Length: 200000\r\n\r\n"), random(200000)...),
		"h2 then lot":   append([]byte(http2Preface), random(100000)...),
	}
	readers := map[string]func(io.Reader) ([]byte, error){
		"ReadAll": io.ReadAll,
		"Read 3 bytes at a time": func(r io.Reader) ([]byte, error) {
			var out []byte
			p := make([]byte, 3)
			for {
				n, err := r.Read(p)
				out = append(out, p[:n]...)
				if err == io.EOF {
					return out, nil
				} else if err != nil {
					return out, err
				}
			}
		},
		"io.Copy to TCP": func(r io.Reader) ([]byte, error) {
			if _, ok := r.(io.WriterTo); !ok {
				t.Fatalf("%T is not an io.WriterTo", r)
			}
			a, b := tcptest.Pair(t)
			got := make(chan []byte, 1)
			go func() {
				data, _ := io.ReadAll(a)
				got <- data
			}()
			n, err := io.Copy(b, r)
			b.CloseWrite()
			data := <-got
			if n != int64(len(data)) {
				t.Errorf("io.Copy reported %d bytes, %d arrived", n, len(data))
			}
			return data, err
		},
	}
	for name, in := range inputs {
		for rname, read := range readers {
			t.Run(name+"/"+rname, func(t *testing.T) {
				client, server := tcptest.Pair(t)
				werr := make(chan error, 1)
				go func() {
					_, err := client.Write(in)
					client.CloseWrite()
					werr <- err
				}()
				_, conn, err := New(Config{Timeout: patience}).Detect(context.Background(), server)
				if err != nil {
					t.Fatal(err)
				}
				got, err := read(conn)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, in) {
					t.Fatalf("got %d bytes, want %d; first difference at %d", len(got), len(in), firstDiff(got, in))
				}
				if err := <-werr; err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestConnConcurrentReads checks, under the race detector, that concurrent
// readers share the replayed bytes without losing or duplicating any.
func TestConnConcurrentReads(t *testing.T) {
	in := make([]byte, 4000)
	for i := range in {
		in[i] = byte(i % 251)
	}
	in[0] = 0 // opaque at once
	client, rc, _ := detectTCP(t, in)
	client.CloseWrite()
	var (
		mu    sync.Mutex
		total int
		sum   int
		wg    sync.WaitGroup
	)
	for range 4 {
		wg.Go(func() {
			p := make([]byte, 7)
			for {
				n, err := rc.Read(p)
				mu.Lock()
				total += n
				for _, c := range p[:n] {
					sum += int(c)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	want := 0
	for _, c := range in {
		want += int(c)
	}
	if total != len(in) || sum != want {
		t.Fatalf("read %d bytes (sum %d), want %d (sum %d)", total, sum, len(in), want)
	}
}

func TestConnPassThrough(t *testing.T) {
	client, rc, res := detectTCP(t, []byte("GET / HTTP/1.1\r\n"))
	server := rc.Unwrap()
	if _, ok := server.(*net.TCPConn); !ok {
		t.Fatalf("Unwrap returned %T", server)
	}
	if rc.LocalAddr().String() != server.LocalAddr().String() || rc.RemoteAddr().String() != client.LocalAddr().String() {
		t.Errorf("addresses %v %v", rc.LocalAddr(), rc.RemoteAddr())
	}
	if rc.Buffered() != res.Peeked {
		t.Errorf("Buffered() = %d, want %d", rc.Buffered(), res.Peeked)
	}
	if _, err := io.ReadFull(rc, make([]byte, res.Peeked)); err != nil {
		t.Fatal(err)
	}
	if rc.Buffered() != 0 {
		t.Errorf("Buffered() = %d after reading everything", rc.Buffered())
	}

	// Write passes through.
	if _, err := rc.Write([]byte("HTTP/1.1 200 OK\r\n")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 17)
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "HTTP/1.1 200 OK\r\n" {
		t.Fatalf("client read %q, %v", got, err)
	}

	// Deadlines pass through.
	for name, set := range map[string]func(time.Time) error{"SetReadDeadline": rc.SetReadDeadline, "SetDeadline": rc.SetDeadline} {
		if err := set(time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := rc.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s in the past: read err = %v", name, err)
		}
		if err := set(time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := rc.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("SetWriteDeadline in the past: write err = %v", err)
	}
}

func TestConnHalfClose(t *testing.T) {
	t.Run("CloseWrite reaches the client", func(t *testing.T) {
		client, rc, _ := detectTCP(t, []byte("\x00ping"))
		var cw interface{ CloseWrite() error } = rc
		if _, err := rc.Write([]byte("bye")); err != nil {
			t.Fatal(err)
		}
		if err := cw.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if got, err := io.ReadAll(client); err != nil || string(got) != "bye" {
			t.Fatalf("client read %q, %v; want bye then EOF", got, err)
		}
		// The other direction still works.
		if _, err := client.Write([]byte("more")); err != nil {
			t.Fatal(err)
		}
		client.CloseWrite()
		if got, err := io.ReadAll(rc); err != nil || string(got) != "\x00pingmore" {
			t.Fatalf("server read %q, %v", got, err)
		}
	})
	t.Run("CloseRead", func(t *testing.T) {
		_, rc, _ := detectTCP(t, []byte("\x00ping"))
		var cr interface{ CloseRead() error } = rc
		if err := cr.CloseRead(); err != nil {
			t.Fatal(err)
		}
		if n, err := rc.Read(make([]byte, 8)); n != 0 || err != io.EOF {
			t.Fatalf("read after CloseRead: %d, %v; want 0, EOF", n, err)
		}
	})
	t.Run("unsupported on net.Pipe", func(t *testing.T) {
		client, server := net.Pipe()
		defer client.Close()
		defer server.Close()
		werr := writeAsync(client, []byte("\x00"))
		_, conn, err := New(Config{Timeout: patience}).Detect(context.Background(), server)
		if err != nil {
			t.Fatal(err)
		}
		<-werr
		if err := conn.(interface{ CloseWrite() error }).CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("CloseWrite on a pipe: %v, want ErrUnsupported", err)
		}
		if err := conn.(interface{ CloseRead() error }).CloseRead(); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("CloseRead on a pipe: %v, want ErrUnsupported", err)
		}
	})
}

// TestConnClose checks that Close drops the replay and releases the buffer:
// reads fail like on any closed connection and nothing stale comes back.
func TestConnClose(t *testing.T) {
	_, rc, _ := detectTCP(t, []byte("\x00secret"))
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	if rc.Buffered() != 0 {
		t.Errorf("Buffered() = %d after Close", rc.Buffered())
	}
	if n, err := rc.Read(make([]byte, 8)); n != 0 || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %d, %v", n, err)
	}
}

// TestConnReleasesBuffer checks that a drained buffer goes back to the pool.
func TestConnReleasesBuffer(t *testing.T) {
	_, rc, _ := detectTCP(t, []byte("\x00abc"))
	if _, err := io.ReadFull(rc, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	released := rc.buf == nil
	rc.mu.Unlock()
	if !released || rc.replaying.Load() {
		t.Fatal("buffer not released after the replay was read")
	}
}

// spliceSpy records whether io.Copy reached the underlying conn's own
// WriteTo and ReadFrom, the methods *net.TCPConn splices in.
type spliceSpy struct {
	*net.TCPConn
	wroteTo, readFrom bool
}

func (s *spliceSpy) WriteTo(w io.Writer) (int64, error) {
	s.wroteTo = true
	return s.TCPConn.WriteTo(w)
}

func (s *spliceSpy) ReadFrom(r io.Reader) (int64, error) {
	s.readFrom = true
	return s.TCPConn.ReadFrom(r)
}

// TestConnKeepsSplicePath checks that io.Copy through a *Conn, in either
// direction, ends in the underlying connection's WriteTo / ReadFrom after
// the replayed prefix.
func TestConnKeepsSplicePath(t *testing.T) {
	client, server := tcptest.Pair(t)
	spy := &spliceSpy{TCPConn: server}
	go func() {
		client.Write([]byte("\x00prefix-and-rest"))
		client.CloseWrite()
	}()
	_, conn, err := New(Config{Timeout: patience}).Detect(context.Background(), spy)
	if err != nil {
		t.Fatal(err)
	}
	a, b := tcptest.Pair(t)
	if _, err := io.Copy(b, conn); err != nil {
		t.Fatal(err)
	}
	b.CloseWrite()
	if got, err := io.ReadAll(a); err != nil || string(got) != "\x00prefix-and-rest" {
		t.Fatalf("copied %q, %v", got, err)
	}
	if !spy.wroteTo {
		t.Error("io.Copy from the *Conn did not reach the underlying WriteTo")
	}

	// The other direction: into the *Conn.
	a.Write([]byte("reply"))
	a.CloseWrite()
	if _, err := io.Copy(conn, b); err != nil {
		t.Fatal(err)
	}
	conn.(*Conn).CloseWrite()
	if got, err := io.ReadAll(client); err != nil || string(got) != "reply" {
		t.Fatalf("client got %q, %v", got, err)
	}
	if !spy.readFrom {
		t.Error("io.Copy into the *Conn did not reach the underlying ReadFrom")
	}
}
