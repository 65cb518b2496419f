package test

import (
	"io"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// On shutdown (SIGTERM, /shutdown) the proxy stops accepting at once, lets
// established connections finish within the grace period, is not ready
// meanwhile, and returns cleanly; connections still open when the grace
// period ends are closed.
func TestShutdownDrainsThenCloses(t *testing.T) {
	p := startPair(t, echoApp(t), pairOptions{opaque: true, clientCfg: func(c *config.Config) {
		c.ShutdownGrace = 500 * time.Millisecond
	}})
	c := dialTCP(t, p.listen)
	if _, err := c.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 6)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	done := p.client.Shutdown()

	// Still carried during the grace period.
	if _, err := c.Write([]byte("during")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "during" {
		t.Fatalf("during the grace period: %q, %v", buf, err)
	}
	// Not accepting any more.
	meshtest.Eventually(t, "the listener to close", func() bool {
		c2, err := dialTimeout(p.listen)
		if err != nil {
			return true
		}
		c2.Close()
		return false
	})

	if err := <-done; err != nil {
		t.Fatalf("Run returned %v, want nil after a graceful shutdown", err)
	}
	if elapsed := time.Since(start); elapsed < 500*time.Millisecond {
		t.Errorf("shut down after %v, before the grace period with a connection open", elapsed)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf); n != 0 || err == nil {
		t.Fatalf("connection still open after the grace period: %d bytes, %v", n, err)
	}
}
