package test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// rawCodec sends *[]byte messages as they are: the tests need gRPC's
// framing, streams and status codes, not protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append((*v.(*[]byte))[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "raw" }

// The echo service, described by hand:
//
//	Unary: echoes the request; "fail:N" fails with status code N.
//	ServerStream: the request is a count N; answers N messages "i".
//	ClientStream: answers the byte count and SHA-256 of all it received.
//	Bidi: echoes every message as it comes.
var echoService = grpc.ServiceDesc{
	ServiceName: "meshtest.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{MethodName: "Unary", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		var in []byte
		if err := dec(&in); err != nil {
			return nil, err
		}
		if code, ok := strings.CutPrefix(string(in), "fail:"); ok {
			n, _ := strconv.Atoi(code)
			return nil, status.Error(codes.Code(n), "asked to fail")
		}
		return &in, nil
	}}},
	Streams: []grpc.StreamDesc{
		{StreamName: "ServerStream", ServerStreams: true, Handler: func(_ any, s grpc.ServerStream) error {
			var in []byte
			if err := s.RecvMsg(&in); err != nil {
				return err
			}
			n, _ := strconv.Atoi(string(in))
			for i := range n {
				out := []byte(strconv.Itoa(i))
				if err := s.SendMsg(&out); err != nil {
					return err
				}
			}
			return nil
		}},
		{StreamName: "ClientStream", ClientStreams: true, Handler: func(_ any, s grpc.ServerStream) error {
			h := sha256.New()
			var total int
			for {
				var in []byte
				err := s.RecvMsg(&in)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return err
				}
				total += len(in)
				h.Write(in)
			}
			out := fmt.Appendf(nil, "%d %x", total, h.Sum(nil))
			return s.SendMsg(&out)
		}},
		{StreamName: "Bidi", ClientStreams: true, ServerStreams: true, Handler: func(_ any, s grpc.ServerStream) error {
			for {
				var in []byte
				err := s.RecvMsg(&in)
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				if err := s.SendMsg(&in); err != nil {
					return err
				}
			}
		}},
	},
}

// grpcEchoApp serves the echo service with grpc-go on a free port.
func grpcEchoApp(t testing.TB) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveGRPCEcho(t, ln)
	return meshtest.Port(ln.Addr())
}

// serveGRPCEcho serves the echo service on ln until the test ends.
func serveGRPCEcho(t testing.TB, ln net.Listener) {
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	srv.RegisterService(&echoService, struct{}{})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
}

// grpcClient connects to addr (the client proxy's listener) in plaintext,
// naming the app's meshed authority.
func grpcClient(t testing.TB, addr string, appPort uint16) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(meshtest.Join(appHost, appPort)),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}
