package test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// A grpc-go client in the client pod calls a grpc-go server in the server
// pod by its IP, over what it thinks is plaintext HTTP/2: the client's
// proxy detects HTTP/2 and carries the calls over mTLS to the server's
// proxy, which hands them to the server with the client's identity known.
func TestTransparentGRPCBetweenPods(t *testing.T) {
	t.Parallel()
	bed := newTestBed(t)
	serverIP := podLAN.Addr().Next().Next()
	client := bed.meshedPod(t, "client", meshedIP(serverIP, "server"), nil)
	server := bed.meshedPod(t, "server", nil, nil)

	ln, err := server.ns.Listen("tcp", ":50051")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	conn, err := grpc.NewClient("passthrough:///"+netip.AddrPortFrom(server.ip, 50051).String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return client.ns.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health check from the client pod: %v, %v", resp, err)
		}
	}
	conn.Close()

	// The app's connection closes; the proxies' pooled HTTP/2 connections
	// stay open for reuse.
	meshtest.Eventually(t, "the app's connection to be counted closed", func() bool {
		return client.metric(t, "tcp_close_total", map[string]string{"direction": "outbound", "peer": "src"}) == 1
	})
	for _, side := range []struct {
		p      *pod
		labels map[string]string
	}{
		{client, map[string]string{"direction": "outbound", "server_id": meshtest.ID("server").String(), "grpc_status": "0"}},
		{server, map[string]string{"direction": "inbound", "client_id": meshtest.ID("client").String(), "grpc_status": "0"}},
	} {
		if n := side.p.metric(t, "response_total", side.labels); n != 3 {
			t.Errorf("%s proxy: %v gRPC calls answered OK, want 3", side.p.name, n)
		}
	}
	if n := client.metric(t, "protocol_detect_total", map[string]string{"direction": "outbound", "result": "http2"}); n != 1 {
		t.Errorf("client proxy: %v connections detected as HTTP/2, want 1", n)
	}
	if n := client.metric(t, "tcp_open_total", map[string]string{
		"direction": "outbound", "peer": "dst", "tls": "true", "server_id": meshtest.ID("server").String(),
	}); n != 1 {
		t.Errorf("client proxy: %v mTLS connections to the server, want 1", n)
	}
	if n := server.metric(t, "tcp_open_total", map[string]string{
		"direction": "inbound", "peer": "dst", "client_id": meshtest.ID("client").String(), "target_addr": "127.0.0.1:50051",
	}); n != 1 {
		t.Errorf("server proxy: %v connections from the client forwarded to the gRPC server, want 1", n)
	}
}
