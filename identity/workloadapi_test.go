package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeAgent is a Workload API server that streams the SVID the test sets:
// a stand-in for the SPIRE agent that the test can stop and restart at
// will. (test/spiretest runs the real agent.)
type fakeAgent struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	socket string

	mu      sync.Mutex
	resp    *workload.X509SVIDResponse // nil: "no identity issued"
	updated chan struct{}              // closed when resp changes
	fetched chan struct{}              // closed at the first fetch
	srv     *grpc.Server
	served  chan struct{}
}

func newFakeAgent(t *testing.T) *fakeAgent {
	t.Helper()
	dir, err := os.MkdirTemp("", "wl") // short: socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	a := &fakeAgent{
		socket:  filepath.Join(dir, "agent.sock"),
		updated: make(chan struct{}),
		fetched: make(chan struct{}),
	}
	a.start(t)
	t.Cleanup(a.stop)
	return a
}

func (a *fakeAgent) addr() string { return "unix://" + a.socket }

func (a *fakeAgent) start(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("unix", a.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(srv, a)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	a.mu.Lock()
	a.srv, a.served = srv, served
	a.mu.Unlock()
}

// stop ends the server and every open stream, as an agent exiting does.
func (a *fakeAgent) stop() {
	a.mu.Lock()
	srv, served := a.srv, a.served
	a.srv = nil
	a.mu.Unlock()
	if srv != nil {
		srv.Stop()
		<-served
	}
}

func (a *fakeAgent) setSVID(t *testing.T, svid *x509svid.SVID, ca *CA) {
	t.Helper()
	var chain []byte
	for _, c := range svid.Certificates {
		chain = append(chain, c.Raw...)
	}
	key, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	resp := &workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
		SpiffeId:    svid.ID.String(),
		X509Svid:    chain,
		X509SvidKey: key,
		Bundle:      ca.Certificate().Raw,
	}}}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.resp = resp
	close(a.updated)
	a.updated = make(chan struct{})
}

func (a *fakeAgent) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	a.mu.Lock()
	select {
	case <-a.fetched:
	default:
		close(a.fetched)
	}
	a.mu.Unlock()
	for {
		a.mu.Lock()
		resp, updated := a.resp, a.updated
		a.mu.Unlock()
		if resp == nil {
			return status.Error(codes.PermissionDenied, "no identity issued")
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		select {
		case <-updated:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// waitFor polls cond; for conditions nothing signals, such as a counter.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWorkloadAPISource follows a source through the agent's life: not yet
// registered, first SVID, rotation, agent gone, agent back.
func TestWorkloadAPISource(t *testing.T) {
	ca := newTestCA(t, tdExample)
	agent := newFakeAgent(t)
	m, err := NewMetrics(prometheus.NewPedanticRegistry())
	if err != nil {
		t.Fatal(err)
	}
	src, err := NewWorkloadAPISource(context.Background(), agent.addr(), nil, m)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	// The constructor did not wait; with no identity yet, not ready.
	<-agent.fetched
	if src.Ready() {
		t.Fatal("ready before any SVID")
	}
	waitFor(t, "the permission_denied error to be counted", func() bool {
		return testutil.ToFloat64(m.errors.WithLabelValues(SourceWorkloadAPI, "permission_denied")) >= 1
	})

	first := issue(t, ca, idServer)
	agent.setSVID(t, first, ca)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := src.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if got := serial(t, src); got != first.Certificates[0].SerialNumber.String() {
		t.Fatalf("serial %s, want %s", got, first.Certificates[0].SerialNumber)
	}
	if b, err := src.GetX509BundleForTrustDomain(tdExample); err != nil || !b.Equal(ca.Bundle()) {
		t.Fatalf("bundle: %v", err)
	}

	// Rotation is pushed.
	changed := src.Changed()
	second := issue(t, ca, idServer)
	agent.setSVID(t, second, ca)
	waitChange(t, changed)
	if got := serial(t, src); got != second.Certificates[0].SerialNumber.String() {
		t.Fatalf("serial %s after rotation, want %s", got, second.Certificates[0].SerialNumber)
	}

	// The agent goes away: the source notices, keeps its SVID, stays ready.
	agent.stop()
	waitFor(t, "the lost connection to be counted", func() bool {
		return testutil.ToFloat64(m.errors.WithLabelValues(SourceWorkloadAPI, "unavailable")) >= 1
	})
	if !src.Ready() {
		t.Fatal("not ready while holding a valid SVID")
	}
	if got := serial(t, src); got != second.Certificates[0].SerialNumber.String() {
		t.Fatal("SVID lost with the agent")
	}

	// The agent comes back with a new SVID: the source reconnects by itself.
	changed = src.Changed()
	third := issue(t, ca, idServer)
	agent.setSVID(t, third, ca)
	agent.start(t)
	waitChange(t, changed)
	if got := serial(t, src); got != third.Certificates[0].SerialNumber.String() {
		t.Fatalf("serial %s after reconnect, want %s", got, third.Certificates[0].SerialNumber)
	}
}

func TestWorkloadAPISourceAddress(t *testing.T) {
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", "")
	if _, err := NewWorkloadAPISource(context.Background(), "", nil, nil); err == nil {
		t.Error("accepted no address")
	}
	for _, addr := range []string{"http://example.org", "unix://relative/path", "tcp://host:1"} {
		if _, err := NewWorkloadAPISource(context.Background(), addr, nil, nil); err == nil {
			t.Errorf("accepted %q", addr)
		}
	}

	// From the environment, to a socket nobody listens on: the constructor
	// returns at once and the source is not ready.
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", "unix://"+filepath.Join(t.TempDir(), "none.sock"))
	src, err := NewWorkloadAPISource(context.Background(), "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := src.WaitReady(ctx); !errors.Is(err, ErrNotReady) {
		t.Errorf("WaitReady = %v, want ErrNotReady", err)
	}
	if err := src.Close(); err != nil {
		t.Error(err)
	}
	if err := src.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestWorkloadAPISourceStopsWithContext: the watch ends with its context.
func TestWorkloadAPISourceStopsWithContext(t *testing.T) {
	agent := newFakeAgent(t)
	ctx, cancel := context.WithCancel(context.Background())
	src, err := NewWorkloadAPISource(ctx, agent.addr(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	<-agent.fetched
	cancel()
	<-src.done
	_ = src.Close()
}

func TestCodeReason(t *testing.T) {
	for code, want := range map[codes.Code]string{
		codes.Unavailable:       "unavailable",
		codes.PermissionDenied:  "permission_denied",
		codes.DeadlineExceeded:  "deadline_exceeded",
		codes.InvalidArgument:   "invalid_argument",
		codes.Unknown:           "unknown",
		codes.ResourceExhausted: "resource_exhausted",
	} {
		if got := codeReason(code); got != want {
			t.Errorf("codeReason(%v) = %q, want %q", code, got, want)
		}
	}
}

func TestWatchBackoff(t *testing.T) {
	b := watchBackoffStrategy{}.NewBackoff()
	var got []time.Duration
	for range 7 {
		got = append(got, b.Next())
	}
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("backoff %v, want %v", got, want)
		}
	}
	b.Reset()
	if d := b.Next(); d != watchMinBackoff {
		t.Errorf("after Reset: %v", d)
	}
}
