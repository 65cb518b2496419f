package controller_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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
)

// buildOnce builds the full meshproxy binary (the destination command is
// not in the sidecar build) once per test binary.
var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "meshproxy-destination-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "meshproxy")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/seed722d2a70/meshproxy/cmd/meshproxy").CombinedOutput()
	if err != nil {
		return "", &buildError{err, string(out)}
	}
	return bin, nil
})

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return "go build: " + e.err.Error() + ": " + e.out }

// controllerProcess is `meshproxy destination` running as a process.
type controllerProcess struct {
	cmd        *exec.Cmd
	exited     chan struct{}
	addrsKnown chan struct{} // closed when addr and adminAddr are set

	mu              sync.Mutex
	addr, adminAddr string
	log             strings.Builder
}

// startController runs the controller with args, and returns once it has
// logged its addresses.
func startController(t *testing.T, args ...string) *controllerProcess {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	p := &controllerProcess{
		cmd:        exec.Command(bin, append([]string{"destination", "-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0"}, args...)...),
		exited:     make(chan struct{}),
		addrsKnown: make(chan struct{}),
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go p.read(stderr)
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
			t.Errorf("controller did not stop within 10 s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("controller log:\n%s", p.Log())
		}
	})
	select {
	case <-p.addrsKnown:
	case <-p.exited:
		t.Fatalf("controller exited: %s", p.Log())
	case <-time.After(30 * time.Second):
		t.Fatalf("controller logged no addresses within 30 s: %s", p.Log())
	}
	return p
}

// read keeps the log and finds the addresses in the first lines; the
// admin server logs before the identity, the gRPC one after.
func (p *controllerProcess) read(r io.Reader) {
	defer func() { _ = p.cmd.Wait(); close(p.exited) }()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		p.log.WriteString(line + "\n")
		var rec struct {
			Msg       string `json:"msg"`
			Addr      string `json:"addr"`
			AdminAddr string `json:"admin_addr"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "destination controller starting" && p.addr == "" {
			p.addr, p.adminAddr = rec.Addr, rec.AdminAddr
			close(p.addrsKnown)
		}
		p.mu.Unlock()
	}
}

func (p *controllerProcess) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func (p *controllerProcess) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + p.adminAddr + path)
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
	if code, _ := unsynced.get(t, "/live"); code != http.StatusOK {
		t.Errorf("/live = %d without an API server, want 200", code)
	}
	time.Sleep(time.Second) // long enough to have synced, had there been an API server
	if code, _ := unsynced.get(t, "/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("/ready = %d without an API server, want 503", code)
	}

	p := startController(t, "-kubeconfig", cluster.Kubeconfig, "-ca-dir", caDir, "-dev-trust-domain", trustDomain)
	deadline := time.Now().Add(within)
	for code, _ := p.get(t, "/ready"); code != http.StatusOK; code, _ = p.get(t, "/ready") {
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
	c, err := destination.NewClient(p.addr, identity.ClientConfig(src, tlsconfig.AuthorizeMemberOf(ca.TrustDomain()), identity.WithNextProtos("h2")), zaptest.NewLogger(t))
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
	_, metrics := p.get(t, "/metrics")
	for _, want := range []string{`destination_subscribers 1`, `destination_watched_objects{kind="service"}`, `destination_resolutions_total{kind="service"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	cancel()
	<-w.Done()
}
