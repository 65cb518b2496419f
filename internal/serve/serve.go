// Package serve runs accept loops and tracks the connections they hand out,
// so that a proxy can stop accepting, let connections drain, and then close
// what is left: the lifecycle both the inbound and outbound proxies share.
//
// An accept loop also outlives running out of file descriptors (fds.go):
// it backs off, sheds what waits in the kernel's backlog, reports itself
// starved until descriptors free up, and recovers without a restart.
package serve

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/internal/ratelog"
)

// Handler serves one accepted connection and closes it before returning.
// ctx is canceled when the server gives up draining; handlers must then
// close their connections promptly.
type Handler func(ctx context.Context, conn net.Conn)

// Server accepts connections on any number of listeners, each with its own
// Handler run in a goroutine per connection, and drains them together. The
// zero value is not usable; use New.
type Server struct {
	log       *zap.Logger
	direction string
	metrics   *Metrics
	onShed    func()
	admit     func(net.Conn) net.Conn
	reserve   int
	fds       fdState

	ctx    context.Context // canceled when draining is over
	cancel context.CancelFunc

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	closing   bool
	conns     sync.WaitGroup
	active    atomic.Int64 // handlers running, as conns counts them
	loops     sync.WaitGroup
}

// Config configures a Server. Every field is optional.
type Config struct {
	Log *zap.Logger
	// Direction labels the metrics: inbound or outbound.
	Direction string
	// Metrics counts accept failures; nil counts nothing.
	Metrics *Metrics
	// OnShed is called for each connection closed unserved because the
	// process is out of file descriptors (see fds.go).
	OnShed func()
	// Admit, when set, is called in the accept loop for each accepted
	// connection, and must not block: it returns the connection to serve
	// (possibly wrapped), or nil when it has closed the connection instead.
	Admit func(net.Conn) net.Conn
	// Reserve is how many descriptors, at the top of the open-file limit,
	// the accept loops leave to the rest of the process (fds.go): 0 means
	// DefaultReserve, negative none.
	Reserve int
}

// New returns a server with no listeners yet.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.OnShed == nil {
		cfg.OnShed = func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		log: cfg.Log, direction: cfg.Direction, metrics: cfg.Metrics, onShed: cfg.OnShed, admit: cfg.Admit, reserve: cfg.Reserve,
		fds: fdState{spare: -1, logEvery: ratelog.New(time.Second)},
		ctx: ctx, cancel: cancel, listeners: map[net.Listener]struct{}{},
	}
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("serve: server closed")

// Serve accepts connections on ln and runs h for each, until Shutdown,
// which closes ln. It returns ErrServerClosed after Shutdown and the accept
// error otherwise.
func (s *Server) Serve(ln net.Listener, h Handler) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		_ = ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.loops.Add(1)
	s.mu.Unlock()
	defer s.loops.Done()
	s.fds.reserve()

	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil && outOfFDs(err) {
			s.metrics.acceptError(s.direction, err)
			s.fds.starved(s.log, err)
			if conn, err = s.acceptWithSpare(ln, err); errors.Is(err, errShed) {
				continue // maybe more are waiting
			}
		} else if err != nil {
			s.metrics.acceptError(s.direction, err)
		}
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: back off and retry,
			// with the bounds net/http's Serve loop uses (5 ms doubling
			// to 1 s), rather than spinning or giving up.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			if !outOfFDs(err) {
				s.log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("delay", delay))
			}
			select {
			case <-time.After(delay):
			case <-s.ctx.Done():
				return ErrServerClosed
			}
			continue
		}
		delay = 0
		if s.inReserve(conn) {
			s.fds.starved(s.log, errReserve)
			s.onShed()
			Reset(conn)
			continue
		}
		s.fds.recovered()
		if s.admit != nil {
			if conn = s.admit(conn); conn == nil {
				continue
			}
		}
		s.conns.Add(1)
		s.active.Add(1)
		go func() {
			defer s.conns.Done()
			defer s.active.Add(-1)
			h(s.ctx, conn)
		}()
	}
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// Shutdown stops accepting at once, then waits for connections to finish
// until ctx is done, when it cancels the handlers' context and waits for
// them to return. It is safe to call more than once and concurrently.
// It returns ctx's error when connections had to be cut short.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		_ = ln.Close()
		delete(s.listeners, ln)
	}
	s.mu.Unlock()
	s.loops.Wait()
	s.fds.release()

	drained := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(drained)
	}()
	select {
	case <-drained:
		s.cancel()
		return nil
	case <-ctx.Done():
		// Nothing was cut short if nothing was running (a zero grace
		// period, say, reaches here before the drained goroutine runs).
		cut := s.active.Load() > 0
		s.cancel()
		<-drained
		if !cut {
			return nil
		}
		return ctx.Err()
	}
}

// Reset closes conn with a reset rather than a FIN: the client learns at
// once and may retry elsewhere, and no socket lingers in FIN_WAIT on our
// side.
func Reset(conn net.Conn) {
	if tc, ok := conn.(interface{ SetLinger(int) error }); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
