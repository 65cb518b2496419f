package httpproxy

import (
	"testing"

	"golang.org/x/net/http2"
)

// pingPong sends a PING and waits for its ACK: the relay has read
// everything sent before it.
func (r *rawH2) pingPong() bool {
	r.t.Helper()
	_ = r.fr.WritePing(false, [8]byte{9, 9})
	return r.next(func(f http2.Frame) bool {
		p, ok := f.(*http2.PingFrame)
		return ok && p.IsAck() && p.Data == [8]byte{9, 9}
	}) != nil
}

// relayStream finds stream id of the relay's only client connection.
func (rl *h2relay) stream(t *testing.T, id uint32) *h2stream {
	t.Helper()
	rl.srv.h2.mu.Lock()
	defer rl.srv.h2.mu.Unlock()
	for d := range rl.srv.h2.m {
		if s := d.lookup(id); s != nil {
			return s
		}
	}
	t.Fatalf("no stream %d in the relay", id)
	return nil
}

// Review #1: each 1-byte DATA frame used to pin a pooled 16 KiB buffer
// while it waited for the upstream's window (4096 frames: 64 MiB). Queued
// payloads of a stream now share buffers, and what they pin is counted.
func TestH2TinyDataFramesShareBuffers(t *testing.T) {
	up := rawH2Server(t, []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 0}}, func(u *rawH2) {
		u.next(func(http2.Frame) bool { return false }) // never opens a window
	})
	rl := startH2Relay(t, up, Config{Direction: "inbound"})
	c := dialRawH2(t, rl.addr)
	c.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "svc.example", ":path", "/upload")
	if !c.pingPong() {
		t.Fatal("no pong")
	}
	const frames = 4096
	c.atOnce(func() {
		for range frames {
			_ = c.fr.WriteData(1, false, []byte{'x'})
		}
	})
	if !c.pingPong() {
		t.Fatal("no pong")
	}
	s := rl.stream(t, 1)
	// The writer may not have taken the last batch yet: a few buffers.
	if held := s.held.Load(); held <= 0 || held > 4*(h2BigFrame+h2ItemCost) {
		t.Errorf("%d one-byte frames pin %d bytes", frames, held)
	}
}
