package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"

	"github.com/seed722d2a70/meshproxy/destination"
	pb "github.com/seed722d2a70/meshproxy/destination/destinationpb"
	"github.com/seed722d2a70/meshproxy/identity"
	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/ports"
)

// DefaultClusterDomain is the DNS domain of Service names unless configured.
const DefaultClusterDomain = "cluster.local"

// Config configures a Controller. Client, Metadata and TrustDomain are
// required.
type Config struct {
	Client   kubernetes.Interface
	Metadata metadata.Interface
	// TrustDomain is the trust domain of the workloads' SPIFFE IDs
	// (spiffe://<TrustDomain>/ns/<namespace>/sa/<service account>).
	TrustDomain string
	// ClusterDomain is the suffix of Service names; DefaultClusterDomain
	// when empty.
	ClusterDomain string
	// DefaultOpaque are the ports opaque where no annotation says otherwise.
	DefaultOpaque ports.Set
	Metrics       *Metrics // nil: no metrics
	Log           *zap.Logger
}

// Controller watches the Kubernetes API and serves the destination API.
// Create it with New, start it with Run.
type Controller struct {
	pb.UnimplementedDestinationServer

	cfg     Config
	ix      *index
	res     *resolver
	log     *zap.Logger
	metrics *Metrics

	synced  chan struct{} // closed when the stores hold a full list
	stopped chan struct{} // closed when Run returns: streams end
	// gen counts events, and keyGens holds, per bucket of keys, the
	// count as of the last event that touched one of them: a topic that
	// finds one of its keys touched after it began computing computes
	// again, so no event falls between computing an answer and
	// registering what it depends on, and events elsewhere in the cluster
	// cost it nothing.
	gen     atomic.Uint64
	keyGens [keyBuckets]atomic.Uint64

	mu     sync.Mutex
	topics map[target]*topic           // by target: one per address subscribed to
	deps   map[key]map[*topic]struct{} // the topics whose answers read each key
}

// New returns a controller; nothing runs until Run.
func New(cfg Config) (*Controller, error) {
	switch {
	case cfg.Client == nil || cfg.Metadata == nil:
		return nil, errors.New("destination controller: a Kubernetes client is required")
	case cfg.TrustDomain == "":
		return nil, errors.New("destination controller: a trust domain is required")
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = DefaultClusterDomain
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	c := &Controller{
		cfg:     cfg,
		log:     cfg.Log,
		metrics: cfg.Metrics,
		synced:  make(chan struct{}),
		stopped: make(chan struct{}),
		topics:  map[target]*topic{},
		deps:    map[key]map[*topic]struct{}{},
	}
	ix, err := newIndex(cfg.Client, cfg.Metadata, c.notify)
	if err != nil {
		return nil, err
	}
	c.ix = ix
	c.res = newResolver(ix, cfg.TrustDomain, cfg.DefaultOpaque)
	if err := c.metrics.watchStores(ix); err != nil {
		return nil, err
	}
	return c, nil
}

// Run starts the informers, waits for their first full lists (Ready), and
// runs until ctx ends. It returns an error only when ctx ends before the
// lists arrived.
func (c *Controller) Run(ctx context.Context) error {
	defer close(c.stopped)
	c.ix.start(ctx.Done())
	defer c.ix.shutdown()
	start := time.Now()
	if !c.ix.waitForSync(ctx.Done()) {
		return fmt.Errorf("destination controller: informers did not sync: %w", ctx.Err())
	}
	c.log.Info("destination controller synced",
		zap.Duration("after", time.Since(start)),
		zap.Int("services", len(c.ix.services.GetStore().ListKeys())),
		zap.Int("endpointslices", len(c.ix.slices.GetStore().ListKeys())),
		zap.Int("pods", len(c.ix.pods.GetStore().ListKeys())))
	close(c.synced)
	<-ctx.Done()
	return nil
}

// Ready reports whether the stores hold a full list, so answers are true.
func (c *Controller) Ready() bool {
	select {
	case <-c.synced:
		return true
	default:
		return false
	}
}

// errStopped ends the streams of a controller that stops: Unavailable, so
// that proxies reconnect.
var errStopped = status.Error(codes.Unavailable, "destination controller stopping")

// NewGRPCServer returns a gRPC server of c's destination API over mTLS with
// src's SVID, which admits callers of src's trust domain only: the mesh's
// proxies.
func NewGRPCServer(c *Controller, src identity.Source) (*grpc.Server, error) {
	svid, err := src.GetX509SVID()
	if err != nil {
		return nil, err
	}
	tlsCfg := identity.ServerConfig(src, tlsconfig.AuthorizeMemberOf(svid.ID.TrustDomain()), identity.WithNextProtos("h2"))
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		// Clients ping idle connections; more often than they do is abuse.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: destination.KeepaliveTime / 2}),
		// Updates are encoded once for every stream that sends them.
		grpc.ForceServerCodecV2(newUpdateCodec()),
		// Thousands of proxies hold a connection each, and what flows on it
		// is small: an update now and then, pings, window updates. gRPC's
		// 32 KiB buffers would make most of the controller's memory.
		grpc.ReadBufferSize(readBufferSize),
		grpc.WriteBufferSize(writeBufferSize),
		// A proxy watches at most destination.MaxWatches addresses, each a
		// stream; more from one connection is not a proxy's doing.
		grpc.MaxConcurrentStreams(destination.MaxWatches),
	)
	pb.RegisterDestinationServer(srv, c)
	return srv, nil
}

// Each connection keeps its read buffer; a write buffer is taken from a
// pool for each write and put back. With 1 000 connections on loopback,
// 4 KiB and 8 KiB hold 29 MiB less heap than gRPC's 32 KiB ones (and
// 8 KiB for both, 22 MiB less). A snapshot of a few dozen endpoints is one
// write; a larger one is written in several.
const (
	readBufferSize  = 4 << 10
	writeBufferSize = 8 << 10
)

// notify marks stale the topics that depend on keys and wakes their
// subscriptions; it runs on the informers' handler goroutines, after the
// store was updated.
func (c *Controller) notify(keys []key, obj any) {
	g := c.gen.Add(1)
	for _, k := range keys {
		c.keyGens[k.bucket()].Store(g)
	}
	now := time.Now()
	c.metrics.observeEvent(obj, now)
	c.checkAnnotations(obj)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		for tp := range c.deps[k] {
			tp.stale.Store(true)
			for s := range tp.subs {
				s.since.CompareAndSwap(0, now.UnixNano())
				select {
				case s.wake <- struct{}{}:
				default:
				}
			}
		}
	}
}

// checkAnnotations logs and counts a malformed opaque-ports annotation when
// its object changes; answers read it as absent.
func (c *Controller) checkAnnotations(obj any) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return
	}
	v, ok := m.GetAnnotations()[inject.AnnotationOpaquePorts]
	if !ok {
		return
	}
	if _, err := ports.Parse(v); err != nil {
		c.metrics.badAnnotation()
		c.log.Warn("ignoring a malformed opaque-ports annotation", zap.String("namespace", m.GetNamespace()),
			zap.String("name", m.GetName()), zap.String("kind", kindOf(obj)), zap.Error(err))
	}
}

func kindOf(obj any) string {
	switch obj.(type) {
	case *corev1.Service:
		return "Service"
	case *corev1.Pod:
		return "Pod"
	case *discoveryv1.EndpointSlice:
		return "EndpointSlice"
	}
	return "Namespace"
}

// Resolve serves one subscription: an answer now, and one more each time
// something it depends on changes. The subscriptions to one target share
// its topic, which computes each answer once for all of them.
func (c *Controller) Resolve(req *pb.ResolveRequest, stream pb.Destination_ResolveServer) error {
	ctx := stream.Context()
	t, err := parseTarget(req.GetAddress(), c.cfg.ClusterDomain)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	select {
	case <-c.synced:
	case <-c.stopped:
		return errStopped
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
	s := &subscription{wake: make(chan struct{}, 1)}
	tp := c.join(t, s)
	c.metrics.subscribed(1)
	defer func() {
		c.leave(tp, s)
		c.metrics.subscribed(-1)
	}()
	var last *version // what this stream sent last
	for {
		v := c.latest(tp)
		if last == nil {
			c.metrics.resolved(v.answer.kind)
		}
		if u := v.updateFrom(last); u != nil {
			if err := stream.SendMsg(u); err != nil {
				return err
			}
			c.metrics.sent(u.Update, s.since.Swap(0))
		} else {
			s.since.Store(0)
		}
		last = v
		select {
		case <-s.wake:
		case <-c.stopped:
			return errStopped
		case <-ctx.Done():
			return nil
		}
	}
}

// diff returns the update that takes a receiver from last to a: a snapshot
// first and when the kind of destination or its Service changed, else a
// delta, or nil when nothing changed.
func diff(last, a *answer) *pb.Update {
	if last == nil || last.kind != a.kind || serviceName(last.service) != serviceName(a.service) {
		eps := make([]*pb.Endpoint, 0, len(a.endpoints))
		for _, ep := range a.endpoints {
			eps = append(eps, ep)
		}
		slices.SortFunc(eps, byAddr)
		return &pb.Update{Kind: &pb.Update_Snapshot{Snapshot: &pb.Snapshot{Kind: a.kind, Service: a.service, Endpoints: eps}}}
	}
	d := &pb.Delta{}
	if !proto.Equal(last.service, a.service) {
		d.Service = a.service
	}
	for addr, ep := range a.endpoints {
		if old, ok := last.endpoints[addr]; !ok || !proto.Equal(old, ep) {
			d.Add = append(d.Add, ep)
		}
	}
	for addr := range last.endpoints {
		if _, ok := a.endpoints[addr]; !ok {
			d.Remove = append(d.Remove, addr)
		}
	}
	if d.Service == nil && len(d.Add) == 0 && len(d.Remove) == 0 {
		return nil
	}
	// Sorted, so that equal changes make equal messages.
	slices.SortFunc(d.Add, byAddr)
	slices.Sort(d.Remove)
	return &pb.Update{Kind: &pb.Update_Delta{Delta: d}}
}

func byAddr(a, b *pb.Endpoint) int { return strings.Compare(a.Address, b.Address) }

func serviceName(s *pb.Service) string {
	if s == nil {
		return ""
	}
	return s.Namespace + "/" + s.Name
}
