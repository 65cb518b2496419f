package identity

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Retry bounds for the Workload API. go-spiffe's default backoff grows
// linearly to 30 s, and gRPC's own reconnect backoff to 120 s; after the
// agent restarts, a proxy should not wait that long to see it again. The
// agent is local, so retrying every few seconds costs nothing.
const (
	watchMinBackoff = 250 * time.Millisecond
	watchMaxBackoff = 5 * time.Second
)

// WorkloadAPISource is a Source fed by a SPIFFE Workload API server such as
// the SPIRE agent. It streams X509-SVID updates (rotations and bundle
// changes are pushed by the agent) and uses the first, default SVID.
//
// The constructor does not wait for the agent: the source is not Ready
// until the first SVID arrives. When the agent goes away the source keeps
// its last SVID and bundles (and stays Ready while that SVID is valid) and
// reconnects in the background with backoff, recovering without a restart.
type WorkloadAPISource struct {
	*state
	addr   string
	client *workloadapi.Client
	log    *zap.Logger
	m      *Metrics
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	lastErr string // last watch error logged; used by the watch goroutine only
}

var _ Source = (*WorkloadAPISource)(nil)

// NewWorkloadAPISource starts watching the Workload API at addr (e.g.
// "unix:///run/spire/agent.sock"; empty means $SPIFFE_ENDPOINT_SOCKET). It
// returns at once; see WaitReady. The watch runs until ctx ends or Close is
// called; Close releases the connection in either case. It fails only if
// the address is missing or malformed. log and m may be nil.
func NewWorkloadAPISource(ctx context.Context, addr string, log *zap.Logger, m *Metrics) (*WorkloadAPISource, error) {
	if addr == "" {
		var ok bool
		if addr, ok = workloadapi.GetDefaultAddress(); !ok || addr == "" {
			return nil, fmt.Errorf("workload API: no address given and %s is not set", workloadapi.SocketEnv)
		}
	}
	if err := workloadapi.ValidateAddress(addr); err != nil {
		return nil, fmt.Errorf("workload API address %q: %w", addr, err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(ctx)
	client, err := workloadapi.New(ctx,
		workloadapi.WithAddr(addr),
		workloadapi.WithBackoffStrategy(watchBackoffStrategy{}),
		workloadapi.WithDialOptions(grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  watchMinBackoff,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   watchMaxBackoff,
			},
			MinConnectTimeout: watchMaxBackoff,
		})),
	)
	if err != nil { // dialing does not block; this is a configuration error
		cancel()
		return nil, fmt.Errorf("workload API client: %w", err)
	}
	s := &WorkloadAPISource{
		state:  newState(),
		addr:   addr,
		client: client,
		log:    log.With(zap.String("identity_source", SourceWorkloadAPI), zap.String("addr", addr)),
		m:      m,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	go s.run(ctx)
	return s, nil
}

// run keeps a watch open until ctx ends. go-spiffe's WatchX509Context
// retries by itself, except when the server rejects the request as invalid.
func (s *WorkloadAPISource) run(ctx context.Context) {
	defer close(s.done)
	for {
		err := s.client.WatchX509Context(ctx, watcher{s})
		if ctx.Err() != nil {
			return
		}
		s.log.Error("Workload API watch ended; restarting", zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(watchMaxBackoff):
		}
	}
}

// Close stops watching and releases the connection. The last SVID stays
// readable.
func (s *WorkloadAPISource) Close() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		<-s.done
		err = s.client.Close()
	})
	return err
}

// watcher receives the Workload API stream; a separate type keeps its
// methods out of WorkloadAPISource's API.
type watcher struct{ s *WorkloadAPISource }

func (w watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	s := w.s
	svid := c.DefaultSVID()
	changed, err := s.set(svid, c.Bundles)
	if err != nil {
		s.m.sourceError(SourceWorkloadAPI, "invalid")
		s.log.Error("ignoring X509-SVID update", zap.Error(err))
		return
	}
	if s.lastErr != "" {
		s.log.Info("Workload API connected")
		s.lastErr = ""
	}
	if changed {
		s.m.svidInstalled(svid)
		leaf := svid.Certificates[0]
		s.log.Info("received X509-SVID",
			zap.Stringer("spiffe_id", svid.ID),
			zap.String("serial", leaf.SerialNumber.Text(16)),
			zap.Time("not_after", leaf.NotAfter),
			zap.Int("bundles", c.Bundles.Len()))
	}
}

func (w watcher) OnX509ContextWatchError(err error) {
	s := w.s
	code := status.Code(err)
	if code == codes.Canceled || errors.Is(err, context.Canceled) {
		return // Close or the caller's context; not a failure
	}
	s.m.sourceError(SourceWorkloadAPI, codeReason(code))
	level := zap.WarnLevel
	if err.Error() == s.lastErr {
		level = zap.DebugLevel // retries repeat it every few seconds
	}
	s.lastErr = err.Error()
	fields := []zap.Field{zap.Error(err)}
	if svid, _ := s.GetX509SVID(); svid != nil {
		fields = append(fields, zap.Time("keeping_svid_until", svid.Certificates[0].NotAfter))
	}
	s.log.Log(level, "Workload API unavailable; retrying", fields...)
}

// codeReason turns a gRPC code into a snake_case metric label
// ("permission_denied", "unavailable", …): bounded, and readable.
func codeReason(c codes.Code) string {
	var b strings.Builder
	prevLower := false
	for _, r := range c.String() {
		if unicode.IsUpper(r) && prevLower {
			b.WriteByte('_')
		}
		prevLower = unicode.IsLower(r)
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// watchBackoffStrategy doubles from watchMinBackoff to watchMaxBackoff.
type watchBackoffStrategy struct{}

func (watchBackoffStrategy) NewBackoff() workloadapi.Backoff { return &watchBackoff{} }

type watchBackoff struct{ next time.Duration }

func (b *watchBackoff) Next() time.Duration {
	if b.next == 0 {
		b.next = watchMinBackoff
	}
	d := b.next
	b.next = min(2*b.next, watchMaxBackoff)
	return d
}

func (b *watchBackoff) Reset() { b.next = 0 }
