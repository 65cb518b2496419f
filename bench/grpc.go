package bench

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
)

// The gRPC service is written by hand, without protoc: one unary method
// whose messages are raw bytes, carried by rawCodec.
const (
	grpcService = "meshbench.Echo"
	grpcMethod  = "/" + grpcService + "/Unary"
)

// rawCodec marshals *[]byte as itself, so the benchmark measures the
// transport and not protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "raw" }

// echoService is the handler type of the hand-written service description.
type echoService interface{}

// grpcEchoDesc describes the echo service: Unary returns its request.
func grpcEchoDesc() *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: grpcService,
		HandlerType: (*echoService)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Unary",
			Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				var in []byte
				if err := dec(&in); err != nil {
					return nil, err
				}
				return &in, nil
			},
		}},
	}
}

// newGRPCServer returns a server with the echo service registered.
func newGRPCServer() *grpc.Server {
	s := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	s.RegisterService(grpcEchoDesc(), struct{}{})
	return s
}
