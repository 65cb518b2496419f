package controller

import (
	"sync"

	"google.golang.org/grpc/encoding"
	protoencoding "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	pb "github.com/seed722d2a70/meshproxy/destination/destinationpb"
)

// sharedUpdate is an update that many streams send: the server's codec
// (updateCodec) encodes it once for all of them. It embeds the message, so
// any other codec encodes it as the message it is.
type sharedUpdate struct {
	*pb.Update

	once sync.Once
	wire []byte
	err  error
}

// encoded returns u's wire form, encoding it on the first call.
func (u *sharedUpdate) encoded() ([]byte, error) {
	u.once.Do(func() { u.wire, u.err = proto.Marshal(u.Update) })
	return u.wire, u.err
}

// updateCodec is gRPC's proto codec, except that it encodes a sharedUpdate
// once, whatever the number of streams that send it. Compression, chosen
// per stream, still applies after it.
type updateCodec struct{ encoding.CodecV2 }

func newUpdateCodec() updateCodec {
	return updateCodec{encoding.GetCodecV2(protoencoding.Name)}
}

func (c updateCodec) Marshal(v any) (mem.BufferSlice, error) {
	u, ok := v.(*sharedUpdate)
	if !ok {
		return c.CodecV2.Marshal(v)
	}
	b, err := u.encoded()
	if err != nil {
		return nil, err
	}
	// A SliceBuffer is never recycled: every stream may hold b at once.
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}
