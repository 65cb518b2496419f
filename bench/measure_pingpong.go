package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"
)

// pingPongSize is the message size of the ping-pong measure.
const pingPongSize = 64

// measurePingPong runs conns connections to the echo app, each sending 64
// bytes and waiting for them back as fast as it can for d, and reports
// round trips per second and their p50 and p99 in microseconds.
func measurePingPong(ctx context.Context, inst *Instance, conns int, d time.Duration) (map[string]float64, error) {
	cs := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	msg := make([]byte, pingPongSize)
	for range conns {
		c, done, err := dial(ctx, inst.Front.Echo)
		if err != nil {
			return nil, err
		}
		defer done()
		cs = append(cs, c)
		if err := roundTrip(c, msg, make([]byte, len(msg))); err != nil { // warm the path
			return nil, err
		}
	}
	rate, h, err := closedLoop(conns, d, func(i int) func() error {
		in := make([]byte, len(msg))
		return func() error { return roundTrip(cs[i], msg, in) }
	})
	if err != nil {
		return nil, err
	}
	return map[string]float64{
		"ops":    rate,
		"p50_us": float64(h.ValueAtQuantile(50)),
		"p99_us": float64(h.ValueAtQuantile(99)),
	}, nil
}

// roundTrip writes out and reads len(in) bytes back, checking they match.
func roundTrip(c net.Conn, out, in []byte) error {
	if _, err := c.Write(out); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	if _, err := io.ReadFull(c, in); err != nil {
		return fmt.Errorf("pong: %w", err)
	}
	if string(in) != string(out) {
		return fmt.Errorf("pong: echoed bytes differ")
	}
	return nil
}
