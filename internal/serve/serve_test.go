package serve

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo copies the connection back to itself until EOF or ctx is canceled.
func echo(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	_, _ = io.Copy(c, c)
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func TestShutdownDrains(t *testing.T) {
	s := New(Config{Log: zap.NewNop()})
	ln := listen(t)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln, echo) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve returned %v, want ErrServerClosed", err)
	}
	// New connections are refused while the old one still works.
	if c2, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c2.Close()
		t.Fatal("dial after Shutdown succeeded")
	}
	if _, err := c.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("draining connection: %q, %v", buf, err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v before the connection ended", err)
	default:
	}
	c.Close()
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown = %v after drain", err)
	}
}

func TestShutdownDeadlineCutsConnections(t *testing.T) {
	s := New(Config{Log: zap.NewNop()})
	ln := listen(t)
	go func() { _ = s.Serve(ln, echo) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown = %v, want context.Canceled", err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after forced shutdown")
	}
	// Idempotent.
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown = %v", err)
	}
}

func TestServeAfterShutdown(t *testing.T) {
	s := New(Config{Log: zap.NewNop()})
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	if err := s.Serve(ln, echo); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve = %v", err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("listener left open")
	}
}

// A shutdown whose grace has already run out cuts nothing short when no
// connection is open, and says so.
func TestShutdownExpiredGraceIdle(t *testing.T) {
	for range 100 { // the drained goroutine must not win by luck
		s := New(Config{Log: zap.NewNop()})
		ln := listen(t)
		served := make(chan error, 1)
		go func() { served <- s.Serve(ln, echo) }()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown of an idle server with no grace = %v, want nil", err)
		}
		<-served
	}
}
