package bench

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// grpcPayloadSize is the size of each unary request and response.
const grpcPayloadSize = 64

// measureGRPC makes unary calls from concurrency callers on one client
// connection (HTTP/2 multiplexing them) as fast as they complete for d, and
// reports calls per second and their p50 and p99 in microseconds.
func measureGRPC(ctx context.Context, inst *Instance, concurrency int, d time.Duration) (map[string]float64, error) {
	cc, err := grpc.NewClient("passthrough:///"+inst.Front.GRPC,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		return nil, fmt.Errorf("grpc: %w", err)
	}
	defer cc.Close()
	call := func(ctx context.Context, req, resp *[]byte) error {
		if err := cc.Invoke(ctx, grpcMethod, req, resp); err != nil {
			return fmt.Errorf("grpc call: %w", err)
		}
		if len(*resp) != len(*req) {
			return fmt.Errorf("grpc: echoed %d bytes, sent %d", len(*resp), len(*req))
		}
		return nil
	}
	req := make([]byte, grpcPayloadSize)
	for range 100 { // connect and warm up
		var resp []byte
		if err := call(ctx, &req, &resp); err != nil {
			return nil, err
		}
	}
	rate, h, err := closedLoop(concurrency, d, func(int) func() error {
		req := make([]byte, grpcPayloadSize)
		var resp []byte
		return func() error { return call(ctx, &req, &resp) }
	})
	if err != nil {
		return nil, err
	}
	return map[string]float64{
		"rps":    rate,
		"p50_us": float64(h.ValueAtQuantile(50)),
		"p99_us": float64(h.ValueAtQuantile(99)),
	}, nil
}
