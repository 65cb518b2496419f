// Package destination is the proxies' side of the destination API: it
// follows what the destination controller (package destination/controller)
// says is at an address, keeping the last known state through controller
// outages. It imports no Kubernetes code, so the sidecar build stays small.
package destination

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	pb "github.com/seed722d2a70/meshproxy/destination/destinationpb"
)

// Keepalive settings shared by the controller and its clients: a client
// pings an idle connection every KeepaliveTime, so a controller gone without
// a FIN (a node lost) is noticed within KeepaliveTime+keepaliveTimeout
// rather than never; the server must permit pings that often.
const (
	KeepaliveTime    = 30 * time.Second
	keepaliveTimeout = 10 * time.Second
)

// MaxMessageSize bounds one update: about 100 000 endpoints.
const MaxMessageSize = 64 << 20

// Client talks to one destination controller. Its connection is shared by
// every Watch; gRPC reconnects it as needed.
type Client struct {
	conn *grpc.ClientConn
	api  pb.DestinationClient
	log  *zap.Logger
}

// NewClient returns a client of the controller at addr ("host:port"),
// authenticated with tlsConfig (identity.ClientConfig, which also decides
// which controller identities to trust). It does not connect until a Watch
// starts.
func NewClient(addr string, tlsConfig *tls.Config, log *zap.Logger) (*Client, error) {
	if log == nil {
		log = zap.NewNop()
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: KeepaliveTime, Timeout: keepaliveTimeout, PermitWithoutStream: false}),
		// A headless Service of thousands of pods is one snapshot.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize)),
	)
	if err != nil {
		return nil, fmt.Errorf("destination controller %s: %w", addr, err)
	}
	return &Client{conn: conn, api: pb.NewDestinationClient(conn), log: log}, nil
}

// Close closes the connection; running watches end with their contexts.
func (c *Client) Close() error { return c.conn.Close() }

// State is what is at an address, as of one update. It is immutable: a
// change makes a new State.
type State struct {
	Kind    pb.Kind
	Service *pb.Service // nil unless a Service is there
	// Endpoints by address ("IP:port").
	Endpoints map[string]*pb.Endpoint
	// Version grows with every update of the watch, so that users can tell
	// a state they have seen from a new one.
	Version uint64
}

// Watch follows one address. Its state survives the controller's outages:
// it is replaced only by what a controller says.
type Watch struct {
	mu      sync.Mutex
	state   State
	known   bool
	changed chan struct{}
	done    chan struct{}
	used    atomic.Int64 // unix ns of the last lookup or State
}

func (w *Watch) touch(now time.Time) { w.used.Store(now.UnixNano()) }

func (w *Watch) lastUsed() time.Time { return time.Unix(0, w.used.Load()) }

// Backoff bounds for reconnecting a watch.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Watch starts following address ("IP:port" or a Service name and port)
// until ctx ends.
func (c *Client) Watch(ctx context.Context, address string) *Watch {
	w := &Watch{changed: make(chan struct{}), done: make(chan struct{})}
	w.touch(time.Now())
	go func() {
		defer close(w.done)
		c.follow(ctx, address, w)
	}()
	return w
}

// follow keeps a Resolve stream open, reconnecting with jittered
// exponential back-off; a stream that delivered an update resets it.
func (c *Client) follow(ctx context.Context, address string, w *Watch) {
	backoff := minBackoff
	for {
		got, err := c.stream(ctx, address, w)
		if ctx.Err() != nil {
			return
		}
		// Said once when a stream that worked ends; the retries that
		// follow (a controller outage, for every watched address) are
		// debug.
		level := zap.DebugLevel
		if got {
			backoff, level = minBackoff, zap.InfoLevel
		}
		c.log.Log(level, "destination stream ended; reconnecting", zap.String("address", address),
			zap.Duration("backoff", backoff), zap.Error(err))
		t := time.NewTimer(backoff/2 + rand.N(backoff/2))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// stream runs one Resolve stream, reporting whether it delivered anything.
func (c *Client) stream(ctx context.Context, address string, w *Watch) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.api.Resolve(ctx, &pb.ResolveRequest{Address: address})
	if err != nil {
		return false, err
	}
	first := true
	for {
		u, err := s.Recv()
		if err != nil {
			return got, err
		}
		// A new stream starts with a snapshot; a delta first would be a
		// controller's bug, and applying it to an old state would hide it.
		if first && u.GetSnapshot() == nil {
			return got, errors.New("stream did not start with a snapshot")
		}
		first = false
		w.apply(u)
		got = true
	}
}

// apply makes the state after u current and announces it.
func (w *Watch) apply(u *pb.Update) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case u.GetSnapshot() != nil:
		s := u.GetSnapshot()
		eps := make(map[string]*pb.Endpoint, len(s.Endpoints))
		for _, ep := range s.Endpoints {
			eps[ep.Address] = ep
		}
		w.state = State{Kind: s.Kind, Service: s.Service, Endpoints: eps, Version: w.state.Version + 1}
	case u.GetDelta() != nil:
		d := u.GetDelta()
		next := State{Kind: w.state.Kind, Service: w.state.Service, Endpoints: maps.Clone(w.state.Endpoints), Version: w.state.Version + 1}
		if next.Endpoints == nil {
			next.Endpoints = map[string]*pb.Endpoint{}
		}
		if d.Service != nil {
			next.Service = d.Service
		}
		for _, ep := range d.Add {
			next.Endpoints[ep.Address] = ep
		}
		for _, a := range d.Remove {
			delete(next.Endpoints, a)
		}
		w.state = next
	default:
		return
	}
	w.known = true
	close(w.changed)
	w.changed = make(chan struct{})
}

// State returns the current state, and false before the first answer.
// Reading it keeps the watch in use (see Resolver).
func (w *Watch) State() (State, bool) {
	w.touch(time.Now())
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state, w.known
}

// Changed returns a channel closed at the next change of the state.
func (w *Watch) Changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

// Fixed returns a watch that holds s and never changes: for callers with a
// fixed answer, and tests.
func Fixed(s State) *Watch {
	w := &Watch{state: s, known: true, changed: make(chan struct{}), done: make(chan struct{})}
	close(w.done)
	w.touch(time.Now())
	return w
}

// Done is closed when the watch has stopped, after its context ended.
func (w *Watch) Done() <-chan struct{} { return w.done }
