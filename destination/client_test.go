package destination_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/seed722d2a70/meshproxy/destination"
	pb "github.com/seed722d2a70/meshproxy/destination/destinationpb"
	"github.com/seed722d2a70/meshproxy/identity"
	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scripted is a destination server whose streams each announce a channel
// on opened, send what the test puts on it, and end when the test sends
// nil.
type scripted struct {
	pb.UnimplementedDestinationServer
	opened  chan chan *pb.Update
	streams atomic.Int32
}

func newScripted() *scripted { return &scripted{opened: make(chan chan *pb.Update, 10)} }

// stream waits for the next stream and returns its channel.
func (s *scripted) stream(t *testing.T) chan<- *pb.Update {
	t.Helper()
	select {
	case ch := <-s.opened:
		return ch
	case <-time.After(10 * time.Second):
		t.Fatal("no stream opened")
		return nil
	}
}

func (s *scripted) Resolve(_ *pb.ResolveRequest, stream pb.Destination_ResolveServer) error {
	s.streams.Add(1)
	updates := make(chan *pb.Update)
	s.opened <- updates
	for {
		select {
		case u := <-updates:
			if u == nil {
				return status.Error(codes.Unavailable, "stream ended by the test")
			}
			if err := stream.Send(u); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

// serve runs s over mTLS with SVIDs of one dev CA, and returns a client.
func serve(t *testing.T, s *scripted) *destination.Client {
	t.Helper()
	ca, err := identity.NewCA(spiffeid.RequireTrustDomainFromString("mesh.test"))
	if err != nil {
		t.Fatal(err)
	}
	source := func(id string) identity.Source {
		src, err := identity.NewDevSource(ca, spiffeid.RequireFromString(id), time.Hour, zaptest.NewLogger(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = src.Close() })
		return src
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(identity.ServerConfig(source("spiffe://mesh.test/destination"),
		tlsconfig.AuthorizeMemberOf(ca.TrustDomain()), identity.WithNextProtos("h2")))))
	pb.RegisterDestinationServer(srv, s)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	c, err := destination.NewClient(ln.Addr().String(), identity.ClientConfig(source("spiffe://mesh.test/proxy"),
		tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://mesh.test/destination")), identity.WithNextProtos("h2")), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func ep(addr string) *pb.Endpoint { return &pb.Endpoint{Address: addr, Meshed: true} }

func snapshot(kind pb.Kind, svc *pb.Service, eps ...*pb.Endpoint) *pb.Update {
	return &pb.Update{Kind: &pb.Update_Snapshot{Snapshot: &pb.Snapshot{Kind: kind, Service: svc, Endpoints: eps}}}
}

func delta(svc *pb.Service, add []*pb.Endpoint, remove ...string) *pb.Update {
	return &pb.Update{Kind: &pb.Update_Delta{Delta: &pb.Delta{Service: svc, Add: add, Remove: remove}}}
}

// next waits for w's state to change from version and returns it.
func next(t *testing.T, w *destination.Watch, version uint64) destination.State {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		changed := w.Changed()
		if s, ok := w.State(); ok && s.Version > version {
			return s
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no state after version %d", version)
		}
	}
}

func addrs(s destination.State) map[string]bool {
	out := map[string]bool{}
	for a := range s.Endpoints {
		out[a] = true
	}
	return out
}

func TestWatchFollowsSnapshotsAndDeltas(t *testing.T) {
	s := newScripted()
	c := serve(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel() }()
	w := c.Watch(ctx, "10.96.0.10:80")
	svc := &pb.Service{Name: "web", Namespace: "shop", Port: 80}
	updates := s.stream(t)

	updates <- snapshot(pb.Kind_KIND_SERVICE, svc, ep("10.1.0.2:8080"), ep("10.1.0.6:8080"))
	st := next(t, w, 0)
	if st.Kind != pb.Kind_KIND_SERVICE || len(st.Endpoints) != 2 || st.Service.GetName() != "web" {
		t.Fatalf("after the snapshot: %+v", st)
	}
	updates <- delta(nil, []*pb.Endpoint{ep("10.1.0.10:8080")}, "10.1.0.2:8080")
	st2 := next(t, w, st.Version)
	if a := addrs(st2); len(a) != 2 || !a["10.1.0.6:8080"] || !a["10.1.0.10:8080"] {
		t.Fatalf("after the delta: %v", a)
	}
	if len(st.Endpoints) != 2 || st.Endpoints["10.1.0.2:8080"] == nil {
		t.Errorf("a delta changed an earlier state in place: %v", addrs(st))
	}
	opaque := &pb.Service{Name: "web", Namespace: "shop", Port: 80, Opaque: true}
	updates <- delta(opaque, nil)
	if st3 := next(t, w, st2.Version); !st3.Service.GetOpaque() || len(st3.Endpoints) != 2 {
		t.Fatalf("after the profile change: %+v", st3)
	}
	updates <- snapshot(pb.Kind_KIND_UNKNOWN, nil)
	if st4 := next(t, w, st2.Version+1); st4.Kind != pb.Kind_KIND_UNKNOWN || st4.Service != nil || len(st4.Endpoints) != 0 {
		t.Fatalf("after the unknown snapshot: %+v", st4)
	}
	cancel()
	<-w.Done()
}

// A stream that ends keeps the state until the next stream's snapshot
// replaces it whole; a stream that starts with a delta is not believed.
func TestWatchKeepsItsStateAcrossStreams(t *testing.T) {
	s := newScripted()
	c := serve(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel() }()
	w := c.Watch(ctx, "10.96.0.10:80")
	first := s.stream(t)
	first <- snapshot(pb.Kind_KIND_SERVICE, nil, ep("10.1.0.2:8080"), ep("10.1.0.6:8080"))
	st := next(t, w, 0)

	// The controller goes away; the next stream says something it
	// cannot: a delta first.
	first <- nil
	s.stream(t) <- delta(nil, []*pb.Endpoint{ep("10.1.0.99:8080")})
	third := s.stream(t)
	if got, _ := w.State(); got.Version != st.Version || len(got.Endpoints) != 2 {
		t.Fatalf("the state changed without a snapshot: %v", addrs(got))
	}
	third <- snapshot(pb.Kind_KIND_SERVICE, nil, ep("10.1.0.6:8080"))
	got := next(t, w, st.Version)
	if a := addrs(got); len(a) != 1 || !a["10.1.0.6:8080"] {
		t.Fatalf("after the new stream's snapshot: %v", a)
	}
	if n := s.streams.Load(); n != 3 {
		t.Errorf("%d streams, want 3 (the first, the one that began with a delta, the good one)", n)
	}
	cancel()
	<-w.Done()
}

// The first question about an address waits a bounded time when the
// controller does not answer, and is counted; later ones share the watch.
func TestResolverWaitsBoundedAndSharesWatches(t *testing.T) {
	s := newScripted()
	c := serve(t, s)
	reg := prometheus.NewRegistry()
	m, err := destination.NewResolverMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	r := destination.NewResolver(c, 200*time.Millisecond, m)
	defer r.Close()

	start := time.Now()
	if _, ok := r.Resolve(context.Background(), "10.96.0.10:80"); ok {
		t.Fatal("resolved with a controller that never answered")
	}
	if waited := time.Since(start); waited < 200*time.Millisecond || waited > 5*time.Second {
		t.Errorf("waited %v for a controller that does not answer, want the 200 ms wait", waited)
	}
	// The address has waited once: later connections do not wait again
	// while it has no answer.
	start = time.Now()
	if _, ok := r.Resolve(context.Background(), "10.96.0.10:80"); ok {
		t.Fatal("resolved with a controller that never answered")
	}
	if waited := time.Since(start); waited >= 200*time.Millisecond {
		t.Errorf("the second lookup waited %v again", waited)
	}
	if n := lookups(t, reg, "timeout"); n != 2 {
		t.Errorf("timeouts counted: %v, want 2", n)
	}
	s.stream(t) <- snapshot(pb.Kind_KIND_POD, nil, ep("10.1.0.2:80"))
	var w *destination.Watch
	deadline := time.Now().Add(10 * time.Second)
	for ok := false; !ok; w, ok = r.Resolve(context.Background(), "10.96.0.10:80") {
		if time.Now().After(deadline) {
			t.Fatal("never resolved after the controller answered")
		}
	}
	if st, _ := w.State(); st.Kind != pb.Kind_KIND_POD {
		t.Errorf("state %+v", st)
	}
	if n := s.streams.Load(); n != 1 {
		t.Errorf("%d streams for one address, want one shared", n)
	}
	if n := lookups(t, reg, "pod"); n < 1 {
		t.Errorf("pod lookups counted: %v", n)
	}
}

// lookups is outbound_destination_lookups_total{result} in reg.
func lookups(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return meshtest.Sum(mfs, "outbound_destination_lookups_total", map[string]string{"result": result})
}
