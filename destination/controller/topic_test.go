package controller

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"

	pb "github.com/seed722d2a70/meshproxy/destination/destinationpb"
	"github.com/seed722d2a70/meshproxy/ports"
	"github.com/seed722d2a70/meshproxy/test/kubetest"
)

// These tests run the controller on a real API server (test/kubetest) and
// call Resolve with streams of their own, which can hold a send, so that
// they see what the subscriptions to one address share.

const (
	testNS        = "shop"
	testClusterIP = "10.96.0.10"
	testAddr      = testClusterIP + ":80"
)

// topicCluster is a controller on a real API server, with one selector-less
// Service (testAddr) whose slice, written by the test, lists the endpoints
// 10.1.0.1, 10.1.0.2, …
type topicCluster struct {
	c      *Controller
	client kubernetes.Interface
	slice  *discoveryv1.EndpointSlice
}

func newTopicCluster(t *testing.T, endpoints int) *topicCluster {
	t.Helper()
	k := kubetest.Start(t, kubetest.Options{})
	k.EnsureNamespace(t, testNS, nil)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "web"},
		Spec:       corev1.ServiceSpec{ClusterIP: testClusterIP, Ports: []corev1.ServicePort{{Port: 80}}},
	}
	if _, err := k.Client.CoreV1().Services(testNS).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	port, name := int32(8080), ""
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "web-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
	}
	for i := range endpoints {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.1.0.%d", i+1)}})
	}
	created, err := k.Client.DiscoveryV1().EndpointSlices(testNS).Create(context.Background(), slice, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	meta, err := metadata.NewForConfig(k.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	f := &topicCluster{client: k.Client, slice: created}
	c, err := New(Config{
		Client: k.Client, Metadata: meta,
		TrustDomain: "mesh.test", DefaultOpaque: ports.MustParse("3306"),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.c = c
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-ran; err != nil {
			t.Error(err)
		}
	})
	select {
	case <-c.synced:
	case <-time.After(10 * time.Second):
		t.Fatal("informers did not sync")
	}
	return f
}

// setReady writes the slice with endpoint i (from 0) ready or not.
func (f *topicCluster) setReady(t *testing.T, i int, ready bool) {
	t.Helper()
	f.slice.Endpoints[i].Conditions.Ready = &ready
	f.write(t)
}

// write writes the slice as it is now.
func (f *topicCluster) write(t *testing.T) {
	t.Helper()
	updated, err := f.client.DiscoveryV1().EndpointSlices(testNS).Update(context.Background(), f.slice, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f.slice = updated
}

// testStream is a Resolve stream whose sends the test receives, and can
// hold.
type testStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent chan *sharedUpdate

	mu sync.Mutex
	// hold, when set, makes the next send wait until it is closed; the
	// send closes holding first.
	hold, holding chan struct{}
}

func (s *testStream) Context() context.Context { return s.ctx }
func (s *testStream) Send(u *pb.Update) error  { return s.SendMsg(&sharedUpdate{Update: u}) }

func (s *testStream) SendMsg(m any) error {
	s.mu.Lock()
	hold, holding := s.hold, s.holding
	s.hold = nil
	s.mu.Unlock()
	if hold != nil {
		close(holding)
		<-hold
	}
	s.sent <- m.(*sharedUpdate)
	return nil
}

// subscribe runs Resolve(addr) until t ends.
func (f *topicCluster) subscribe(t *testing.T, addr string) *testStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &testStream{ctx: ctx, sent: make(chan *sharedUpdate, 16)}
	done := make(chan error, 1)
	go func() { done <- f.c.Resolve(&pb.ResolveRequest{Address: addr}, s) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Resolve: %v", err)
		}
	})
	return s
}

// next returns the stream's next update.
func (s *testStream) next(t *testing.T) *sharedUpdate {
	t.Helper()
	select {
	case u := <-s.sent:
		return u
	case <-time.After(5 * time.Second):
		t.Fatal("no update within 5 s")
		return nil
	}
}

// holdNext makes the stream's next send wait until release is called;
// holding closes when that send begins.
func (s *testStream) holdNext() (holding <-chan struct{}, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold, s.holding = make(chan struct{}), make(chan struct{})
	hold := s.hold
	return s.holding, func() { close(hold) }
}

func snapshotOf(t *testing.T, u *sharedUpdate, want ...string) {
	t.Helper()
	s := u.GetSnapshot()
	if s == nil {
		t.Fatalf("got %v, want a snapshot", u.Update)
	}
	var got []string
	for _, ep := range s.Endpoints {
		got = append(got, ep.Address)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("snapshot of %v, want %v", got, want)
	}
}

func deltaRemoving(t *testing.T, u *sharedUpdate, want ...string) {
	t.Helper()
	d := u.GetDelta()
	if d == nil || len(d.Add) > 0 || d.Service != nil || !slices.Equal(d.Remove, want) {
		t.Fatalf("got %v, want a delta removing %v", u.Update, want)
	}
}

func TestSubscribersOfOneAddressShareUpdates(t *testing.T) {
	f := newTopicCluster(t, 3)
	a, b := f.subscribe(t, testAddr), f.subscribe(t, testAddr)
	all := []string{"10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.3:8080"}
	ua, ub := a.next(t), b.next(t)
	snapshotOf(t, ua, all...)
	if ua != ub {
		t.Errorf("the two subscribers' snapshots are two messages: %p, %p", ua, ub)
	}

	f.setReady(t, 0, false)
	ua, ub = a.next(t), b.next(t)
	deltaRemoving(t, ua, "10.1.0.1:8080")
	if ua != ub {
		t.Errorf("the two subscribers' deltas are two messages: %v, %v", ua.Update, ub.Update)
	}
	wa, err := ua.encoded()
	if err != nil {
		t.Fatal(err)
	}
	if wire, _ := newUpdateCodec().Marshal(ub); !slices.Equal(wire.Materialize(), wa) {
		t.Error("the codec encodes a shared update otherwise than proto does")
	}

	// The same address spelled otherwise is the same topic.
	c := f.subscribe(t, "[::ffff:"+testClusterIP+"]:80")
	snapshotOf(t, c.next(t), all[1:]...)
	f.c.mu.Lock()
	topics := len(f.c.topics)
	f.c.mu.Unlock()
	if topics != 1 {
		t.Errorf("%d topics for one address, want 1", topics)
	}
}

func TestLateSubscriberGetsTheWholeAnswer(t *testing.T) {
	f := newTopicCluster(t, 3)
	a := f.subscribe(t, testAddr)
	snapshotOf(t, a.next(t), "10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.3:8080")
	f.setReady(t, 2, false)
	deltaRemoving(t, a.next(t), "10.1.0.3:8080")

	late := f.subscribe(t, testAddr)
	snapshotOf(t, late.next(t), "10.1.0.1:8080", "10.1.0.2:8080")
	f.setReady(t, 1, false)
	ua, ul := a.next(t), late.next(t)
	deltaRemoving(t, ul, "10.1.0.2:8080")
	if ua != ul {
		t.Errorf("after its snapshot, the late subscriber gets its own delta: %v", ul.Update)
	}
}

func TestSlowSubscriberDelaysNoOther(t *testing.T) {
	f := newTopicCluster(t, 3)
	slow, fast := f.subscribe(t, testAddr), f.subscribe(t, testAddr)
	slow.next(t)
	fast.next(t)

	holding, release := slow.holdNext()
	f.setReady(t, 0, false)
	<-holding // the slow one is sending the first change, and stuck there
	first := fast.next(t)
	deltaRemoving(t, first, "10.1.0.1:8080")
	f.setReady(t, 1, false)
	deltaRemoving(t, fast.next(t), "10.1.0.2:8080")
	f.setReady(t, 2, false)
	deltaRemoving(t, fast.next(t), "10.1.0.3:8080")

	// Released, it finishes the send it was in, then catches up in one
	// update of its own: the two changes it missed.
	release()
	if u := slow.next(t); u != first {
		t.Errorf("the slow subscriber's held send: %v, want the first change", u.Update)
	}
	deltaRemoving(t, slow.next(t), "10.1.0.2:8080", "10.1.0.3:8080")
}

func TestNoUpdateWhenNothingChanged(t *testing.T) {
	f := newTopicCluster(t, 2)
	a := f.subscribe(t, testAddr)
	a.next(t)
	// A change that leaves the answer as it was.
	f.slice.Labels["team"] = "web"
	f.write(t)
	time.Sleep(200 * time.Millisecond)
	f.setReady(t, 1, false)
	deltaRemoving(t, a.next(t), "10.1.0.2:8080")
	select {
	case u := <-a.sent:
		t.Errorf("an update with nothing changed: %v", u.Update)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestTopicDroppedWithItsLastSubscriber(t *testing.T) {
	f := newTopicCluster(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	s := &testStream{ctx: ctx, sent: make(chan *sharedUpdate, 16)}
	done := make(chan error, 1)
	go func() { done <- f.c.Resolve(&pb.ResolveRequest{Address: testAddr}, s) }()
	s.next(t)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	f.c.mu.Lock()
	defer f.c.mu.Unlock()
	if len(f.c.topics) != 0 || len(f.c.deps) != 0 {
		t.Errorf("after the last subscriber left: %d topics, %d keys registered; want none", len(f.c.topics), len(f.c.deps))
	}
}

// TestVersionUpdateFrom checks what a subscriber sends from each place it
// may be: nothing yet, up to date, one version behind, further.
func TestVersionUpdateFrom(t *testing.T) {
	ep := func(addr string) *pb.Endpoint { return &pb.Endpoint{Address: addr} }
	svc := &pb.Service{Name: "web", Namespace: testNS, Port: 80}
	answerOf := func(eps ...*pb.Endpoint) *answer {
		a := &answer{kind: pb.Kind_KIND_SERVICE, service: svc, endpoints: map[string]*pb.Endpoint{}}
		for _, e := range eps {
			a.endpoints[e.Address] = e
		}
		return a
	}
	tp := &topic{}
	tp.publish(answerOf(ep("a:1"), ep("b:1")))
	v1 := tp.cur
	if v1.update.GetSnapshot() == nil || v1.snapshot() != v1.update {
		t.Fatalf("first version: update %v; want the snapshot, shared", v1.update.Update)
	}
	tp.publish(answerOf(ep("a:1"), ep("b:1")))
	if tp.cur != v1 {
		t.Fatal("an unchanged answer made a new version")
	}
	tp.publish(answerOf(ep("a:1")))
	v2 := tp.cur
	tp.publish(answerOf(ep("a:1"), ep("b:1")))
	v3 := tp.cur
	tp.publish(answerOf(ep("a:1"), ep("c:1")))
	v4 := tp.cur
	if v4.n != 4 {
		t.Fatalf("version %d, want 4", v4.n)
	}
	wantDelta := func(add []*pb.Endpoint, remove ...string) *pb.Update {
		return &pb.Update{Kind: &pb.Update_Delta{Delta: &pb.Delta{Add: add, Remove: remove}}}
	}
	for _, tc := range []struct {
		name     string
		v, last  *version
		want     *pb.Update
		sharedBy *sharedUpdate // nil: a message of its own
	}{
		{"nothing sent yet", v2, nil, &pb.Update{Kind: &pb.Update_Snapshot{Snapshot: &pb.Snapshot{
			Kind: pb.Kind_KIND_SERVICE, Service: svc, Endpoints: []*pb.Endpoint{ep("a:1")}}}}, v2.snapshot()},
		{"up to date", v4, v4, nil, nil},
		{"one behind", v4, v3, wantDelta([]*pb.Endpoint{ep("c:1")}, "b:1"), v4.update},
		{"two behind", v4, v2, wantDelta([]*pb.Endpoint{ep("c:1")}), nil},
		{"behind, but back where it was", v3, v1, nil, nil},
	} {
		got := tc.v.updateFrom(tc.last)
		if got == nil || tc.want == nil {
			if (got == nil) != (tc.want == nil) {
				t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
			}
			continue
		}
		if !proto.Equal(got.Update, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got.Update, tc.want)
		}
		if tc.sharedBy != nil && got != tc.sharedBy {
			t.Errorf("%s: a message of its own, want the shared one", tc.name)
		}
	}
}
