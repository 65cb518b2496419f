package tcptest

import (
	"io"
	"net"
	"testing"
)

func TestPairCarriesBytesAndHalfClose(t *testing.T) {
	d, a := Pair(t)
	go func() {
		_, _ = d.Write([]byte("ping"))
		_ = d.CloseWrite()
	}()
	got, err := io.ReadAll(a)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "ping" {
		t.Fatalf("accepted end read %q, want %q", got, "ping")
	}
}

// Serve runs the handler on each connection, and the test's end closes
// connections the handler still holds.
func TestServe(t *testing.T) {
	held := make(chan struct{})
	addr := ""
	t.Run("serve", func(t *testing.T) {
		addr = Serve(t, func(c net.Conn) {
			_, _ = c.Write([]byte("hi"))
			_, _ = io.Copy(io.Discard, c) // until the cleanup closes c
			close(held)
		})
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		got := make([]byte, 2)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "hi" {
			t.Fatalf("read %q, %v", got, err)
		}
	})
	select {
	case <-held:
	default:
		t.Fatal("the handler was still running after the subtest's cleanup")
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("still listening after the test")
	}
}
