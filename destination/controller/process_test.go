package controller_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/seed722d2a70/meshproxy/destination"
	"github.com/seed722d2a70/meshproxy/identity"
	"github.com/seed722d2a70/meshproxy/test/kubetest"
	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// buildOnce builds the full meshproxy binary (the destination command is
// not in the sidecar build) once per test binary.
var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "meshproxy-destination-bin")
	if err != nil {
		return "", err
	}
	return meshtest.BuildFull(dir)
})

// startController runs `meshproxy destination` with args as a process.
func startController(t *testing.T, args ...string) *meshtest.Process {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	return meshtest.StartProcessWith(t, bin, meshtest.ProcessOptions{Command: "destination"},
		append([]string{"-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0"}, args...)...)
}

// get fetches path from the controller's admin server.
func get(t *testing.T, p *meshtest.Process, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + p.Admin + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestDestinationCommand(t *testing.T) {
	cluster := kubetest.Start(t, kubetest.Options{ControllerManager: true})
	caDir := t.TempDir()
	ca, _, err := identity.LoadOrCreateCA(caDir, spiffeid.RequireTrustDomainFromString(trustDomain))
	if err != nil {
		t.Fatal(err)
	}

	// An API server that does not answer: alive, never ready.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	_ = dead.Close()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	raw, err := os.ReadFile(cluster.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kubeconfig, []byte(strings.Replace(string(raw), cluster.RESTConfig().Host, "https://"+deadAddr, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	unsynced := startController(t, "-kubeconfig", kubeconfig, "-ca-dir", caDir, "-dev-trust-domain", trustDomain)
	if code, _ := get(t, unsynced, "/live"); code != http.StatusOK {
		t.Errorf("/live = %d without an API server, want 200", code)
	}
	time.Sleep(time.Second) // long enough to have synced, had there been an API server
	if code, _ := get(t, unsynced, "/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("/ready = %d without an API server, want 503", code)
	}

	p := startController(t, "-kubeconfig", cluster.Kubeconfig, "-ca-dir", caDir, "-dev-trust-domain", trustDomain)
	deadline := time.Now().Add(within)
	for code, _ := get(t, p, "/ready"); code != http.StatusOK; code, _ = get(t, p, "/ready") {
		if time.Now().After(deadline) {
			t.Fatalf("/ready = %d after %v", code, within)
		}
		time.Sleep(50 * time.Millisecond)
	}

	const ns = "process"
	app := map[string]string{"app": "redis"}
	pod := meshedPod(t, cluster, ns, "redis-0", "redis", app, nil, true, 4143, corev1.ContainerPort{Name: "resp", ContainerPort: 6379})
	svc := createService(t, cluster, service(ns, "redis", nil, app, corev1.ServicePort{Port: 6380, TargetPort: intstr.FromString("resp")}))

	src := devSource(t, ca, "spiffe://"+trustDomain+"/ns/default/sa/client")
	c, err := destination.NewClient(p.API, identity.ClientConfig(src, tlsconfig.AuthorizeMemberOf(ca.TrustDomain()), identity.WithNextProtos("h2")), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := c.Watch(ctx, svcAddr(svc, 6380))
	s := waitFor(t, w, within, "the pod at 6379", hasAddresses(hostPort(pod.IP, 6379)))
	if ep := s.Endpoints[hostPort(pod.IP, 6379)]; !ep.Meshed || ep.Identity != "spiffe://"+trustDomain+"/ns/"+ns+"/sa/redis" {
		t.Errorf("endpoint %v", ep)
	}
	_, metrics := get(t, p, "/metrics")
	for _, want := range []string{`destination_subscribers 1`, `destination_watched_objects{kind="service"}`, `destination_resolutions_total{kind="service"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	cancel()
	<-w.Done()
}
