package test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// gRPC goes through both proxies in all four kinds of call, including a
// 100 MB client stream, and status codes reach the client and the metrics
// of both proxies.
func TestGRPCFourCallKindsAndStatusCodes(t *testing.T) {
	for _, netHTTP2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http2-relay", true: "net-http"}[netHTTP2], func(t *testing.T) {
			testGRPCFourCallKinds(t, pairOptions{netHTTP2: netHTTP2})
		})
	}
}

// testGRPCFourCallKinds is TestGRPCFourCallKindsAndStatusCodes through a
// pair started with o.
func testGRPCFourCallKinds(t *testing.T, o pairOptions) {
	port := grpcEchoApp(t)
	p := startPair(t, port, o)
	cc := grpcClient(t, p.listen, port)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("unary", func(t *testing.T) {
		in, out := []byte("hello"), []byte(nil)
		if err := cc.Invoke(ctx, "/meshtest.Echo/Unary", &in, &out); err != nil {
			t.Fatal(err)
		}
		if string(out) != "hello" {
			t.Errorf("got %q", out)
		}
	})
	t.Run("status codes round-trip", func(t *testing.T) {
		for _, code := range []codes.Code{codes.NotFound, codes.PermissionDenied, codes.Internal} {
			in, out := []byte("fail:"+strconv.Itoa(int(code))), []byte(nil)
			err := cc.Invoke(ctx, "/meshtest.Echo/Unary", &in, &out)
			if status.Code(err) != code {
				t.Errorf("asked for %v, got %v", code, err)
			}
		}
	})
	t.Run("server stream", func(t *testing.T) {
		s, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/meshtest.Echo/ServerStream")
		if err != nil {
			t.Fatal(err)
		}
		const n = 1000
		req := []byte(strconv.Itoa(n))
		if err := s.SendMsg(&req); err != nil {
			t.Fatal(err)
		}
		_ = s.CloseSend()
		for i := 0; ; i++ {
			var msg []byte
			err := s.RecvMsg(&msg)
			if errors.Is(err, io.EOF) {
				if i != n {
					t.Errorf("%d messages, want %d", i, n)
				}
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(msg) != strconv.Itoa(i) {
				t.Fatalf("message %d is %q", i, msg)
			}
		}
	})
	t.Run("client stream of 100 MB", func(t *testing.T) {
		s, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, "/meshtest.Echo/ClientStream")
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		const total, size = 100 << 20, 1 << 20
		for range total / size {
			// A fresh buffer each time: gRPC may still hold the last one.
			chunk := make([]byte, size)
			_, _ = rand.Read(chunk)
			h.Write(chunk)
			if err := s.SendMsg(&chunk); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		var reply []byte
		if err := s.RecvMsg(&reply); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("%d %x", total, h.Sum(nil)); string(reply) != want {
			t.Errorf("server saw %q, want %q", reply, want)
		}
	})
	t.Run("bidi", func(t *testing.T) {
		s, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/meshtest.Echo/Bidi")
		if err != nil {
			t.Fatal(err)
		}
		// Lockstep: each answer must arrive before the next message is
		// sent, so nothing on the way may wait for the stream to end.
		for i := range 100 {
			msg := []byte("ping " + strconv.Itoa(i))
			if err := s.SendMsg(&msg); err != nil {
				t.Fatal(err)
			}
			var got []byte
			if err := s.RecvMsg(&got); err != nil {
				t.Fatal(err)
			}
			if string(got) != string(msg) {
				t.Fatalf("got %q, want %q", got, msg)
			}
		}
		_ = s.CloseSend()
		if err := s.RecvMsg(new([]byte)); !errors.Is(err, io.EOF) {
			t.Errorf("end of stream: %v", err)
		}
	})

	for _, side := range []struct {
		name string
		m    func(map[string]string) float64
	}{
		{"client", func(l map[string]string) float64 { return p.client.Metric(t, "response_total", l) }},
		{"server", func(l map[string]string) float64 { return p.server.Metric(t, "response_total", l) }},
	} {
		if n := side.m(map[string]string{"grpc_status": "0", "classification": "success", "status_code": "200"}); n != 4 {
			t.Errorf("%s proxy: %v OK calls, want 4", side.name, n)
		}
		for _, code := range []string{"5", "7", "13"} {
			if n := side.m(map[string]string{"grpc_status": code, "classification": "failure"}); n != 1 {
				t.Errorf("%s proxy: %v calls with grpc-status %s, want 1", side.name, n, code)
			}
		}
	}
}
