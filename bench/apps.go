package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// sinkBufferSize is the sink's read size: large, so the sink is never what
// limits bulk throughput.
const sinkBufferSize = 256 << 10

// httpBody is what the HTTP app answers: small, so the measure is the
// proxy's per-request cost.
const httpBody = "hello from the meshbench app\n"

// ServeApps runs the backend apps on the given addresses until ctx ends:
// the sink, the echo server, an HTTP/1.1 server and a gRPC server. It
// closes every listener and connection before it returns.
func ServeApps(ctx context.Context, addrs Endpoints) error {
	var lc net.ListenConfig
	listen := func(addr string) (net.Listener, error) { return lc.Listen(ctx, "tcp", addr) }
	sinkL, err := listen(addrs.Sink)
	if err != nil {
		return fmt.Errorf("apps: %w", err)
	}
	echoL, err := listen(addrs.Echo)
	if err != nil {
		sinkL.Close()
		return fmt.Errorf("apps: %w", err)
	}
	httpL, err := listen(addrs.HTTP)
	if err != nil {
		sinkL.Close()
		echoL.Close()
		return fmt.Errorf("apps: %w", err)
	}
	grpcL, err := listen(addrs.GRPC)
	if err != nil {
		sinkL.Close()
		echoL.Close()
		httpL.Close()
		return fmt.Errorf("apps: %w", err)
	}

	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, httpBody)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	gs := newGRPCServer()
	var (
		wg    sync.WaitGroup
		conns connSet
	)
	wg.Go(func() { serveConns(sinkL, &conns, sink) })
	wg.Go(func() { serveConns(echoL, &conns, echo) })
	wg.Go(func() { _ = srv.Serve(httpL) })
	wg.Go(func() { _ = gs.Serve(grpcL) })

	<-ctx.Done()
	sinkL.Close()
	echoL.Close()
	conns.closeAll()
	_ = srv.Close()
	gs.Stop()
	wg.Wait()
	return nil
}

// connSet tracks a server's connections so shutdown can close them.
type connSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// serveConns accepts until l is closed, running handle on each connection.
func serveConns(l net.Listener, conns *connSet, handle func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if !conns.add(c) {
			c.Close()
			return
		}
		go func() {
			defer conns.remove(c)
			defer c.Close()
			handle(c)
		}()
	}
}

// sink reads to EOF, then answers the byte count (8 bytes, big endian), so
// the sender knows every byte arrived.
func sink(c net.Conn) {
	buf := make([]byte, sinkBufferSize)
	var n uint64
	for {
		m, err := c.Read(buf)
		n += uint64(m)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				return
			}
			break
		}
	}
	var out [8]byte
	binary.BigEndian.PutUint64(out[:], n)
	_, _ = c.Write(out[:])
}

// echo writes back what it reads; at EOF it half-closes.
func echo(c net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		m, err := c.Read(buf)
		if m > 0 {
			if _, werr := c.Write(buf[:m]); werr != nil {
				return
			}
		}
		if err != nil {
			break
		}
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}
