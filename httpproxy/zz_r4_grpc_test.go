package httpproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Fourth review: an upstream grpc-go server that ends its connections
// after MaxConnectionAge (GOAWAY, then a second GOAWAY after a PING, then
// close once the grace ends) and, half-way, a GracefulStop of one server
// with another taking its address' place. Unary calls and bidi streams run
// through the relay all along: none may fail but the streams cut by the
// grace's end (there are none: each lives under the grace). Afterwards no
// goroutine of the relay is left.
func TestR4GRPCUpstreamGoAwayUnderLoad(t *testing.T) {
	t.Cleanup(func() {
		// Last: after the servers, pools and clients are closed.
		time.Sleep(2 * h2Linger)
		goleak.VerifyNone(t, goleak.IgnoreCurrent())
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	newSrv := func() *grpc.Server {
		return grpc.NewServer(grpc.ForceServerCodec(rawCodec{}),
			grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: 300 * time.Millisecond, MaxConnectionAgeGrace: 5 * time.Second}),
			grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
				for {
					var b []byte
					if err := ss.RecvMsg(&b); err != nil {
						if errors.Is(err, io.EOF) {
							return nil
						}
						return err
					}
					if err := ss.SendMsg(&b); err != nil {
						return err
					}
				}
			}))
	}
	srv1 := newSrv()
	go func() { _ = srv1.Serve(ln) }()

	paddr, s, pool := grpcProxy(t, true, dialTo(addr))
	cc := grpcTestClient(t, paddr)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var ok atomic.Int64
	var errs sync.Map
	fail := func(err error) { errs.Store(err.Error(), true) }
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				in, out := []byte("u"), []byte(nil)
				if err := cc.Invoke(context.Background(), "/s.S/U", &in, &out); err != nil {
					fail(err)
				} else {
					ok.Add(1)
				}
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				st, err := cc.NewStream(context.Background(), &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/s.S/Echo")
				if err != nil {
					fail(err)
					continue
				}
				for range 5 {
					b := make([]byte, 100<<10)
					if err := st.SendMsg(&b); err != nil {
						fail(err)
						break
					}
					if err := st.RecvMsg(&b); err != nil || len(b) != 100<<10 {
						fail(err)
						break
					}
				}
				_ = st.CloseSend()
				var b []byte
				if err := st.RecvMsg(&b); !errors.Is(err, io.EOF) {
					fail(err)
				} else {
					ok.Add(1)
				}
			}
		})
	}
	time.Sleep(1500 * time.Millisecond)
	// The app restarts: GracefulStop, and a new server on the same port.
	stopped := make(chan struct{})
	go func() { srv1.GracefulStop(); close(stopped) }()
	ln2, err := net.Listen("tcp", addr)
	for i := 0; err != nil && i < 100; i++ {
		time.Sleep(10 * time.Millisecond)
		ln2, err = net.Listen("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv2 := newSrv()
	go func() { _ = srv2.Serve(ln2) }()
	t.Cleanup(srv2.Stop)
	wg.Wait()
	<-stopped
	n := 0
	errs.Range(func(k, _ any) bool { n++; t.Logf("failure: %v", k); return true })
	t.Logf("%d calls and streams ok; relay: %+v", ok.Load(), snapshot(s, pool))
	if n > 0 {
		t.Errorf("%d kinds of failure through the relay while the upstream went away gracefully", n)
	}
}
