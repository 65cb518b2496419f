//go:build !sidecar

package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/internal/testcert"
	"go.uber.org/goleak"
	admissionv1 "k8s.io/api/admission/v1"
)

func TestInjectCommand(t *testing.T) {
	want, err := os.ReadFile("../../inject/testdata/redis-statefulset.golden")
	if err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runCmd(t, context.Background(), "inject", "../../inject/testdata/redis-statefulset.yaml")
	if err != nil {
		t.Fatal(err, stderr)
	}
	if out != string(want) {
		t.Errorf("output differs from the package's golden file")
	}
	if !strings.Contains(stderr, "StatefulSet cache/redis: injected") {
		t.Errorf("stderr %q", stderr)
	}

	out, _, err = runCmd(t, context.Background(), "inject", "-dry-run", "-sidecar", "container", "../../inject/testdata/pod.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "--- before\n+++ after\n") || !strings.Contains(out, "+  - args:\n+    - run\n") {
		t.Errorf("dry run diff:\n%s", out)
	}

	out, _, err = runCmd(t, context.Background(), "inject", "-uninject", "../../inject/testdata/already-injected.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "name: meshproxy") || strings.Contains(out, "meshproxy.io/injected") || !strings.Contains(out, "name: web\n") {
		t.Errorf("uninjected output still has the proxy:\n%s", out)
	}

	out, _, err = runCmd(t, context.Background(), "inject", "-meshed-networks", "10.77.0.0/16, fd77::/64", "../../inject/testdata/pod.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "- name: MESHPROXY_MESHED_NETWORKS\n      value: 10.77.0.0/16,fd77::/64\n") {
		t.Errorf("-meshed-networks not given to the proxy:\n%s", out)
	}
	out, _, err = runCmd(t, context.Background(), "inject", "-meshed-networks=", "../../inject/testdata/pod.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "MESHPROXY_MESHED_NETWORKS") {
		t.Errorf("-meshed-networks= still sets networks:\n%s", out)
	}

	for _, bad := range [][]string{
		{"inject", "-meshed-networks", "10.0.0.0/8,pods"},
		{"inject", "-sidecar", "sometimes"},
		{"inject", "-socket", "nfs"},
		{"inject", "-proxy-uid", "0"},
		{"inject", "-inbound-port", "70000"},
		{"inject", "-proxy-memory-limit", "lots"},
	} {
		if _, _, err := runCmd(t, context.Background(), bad...); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestNetpolCommand(t *testing.T) {
	src, err := os.ReadFile("../../netpol/testdata/seed.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "seed.yaml")
	if err := os.WriteFile(path, src, 0o640); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := runCmd(t, context.Background(), "netpol", path)
	if !errors.Is(err, errProblemsFound) || exitCode(err) != 1 {
		t.Fatalf("error %v (exit %d), want problems found (exit 1)", err, exitCode(err))
	}
	if !strings.Contains(stderr, "cache/redis-from-web: ingress rule 1 admits port(s) 6379") {
		t.Errorf("stderr %q", stderr)
	}
	if _, _, err := runCmd(t, context.Background(), "netpol", "-fix", path); err != nil {
		t.Fatalf("with -fix: %v", err)
	}
	fixed, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(fixed), "- port: 4143") {
		t.Errorf("file not fixed:\n%s", fixed)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v %v, want 0640 kept", st.Mode(), err)
	}
	if _, _, err := runCmd(t, context.Background(), "netpol", path); err != nil {
		t.Errorf("after fixing: %v", err)
	}
	if _, _, err := runCmd(t, context.Background(), "netpol", "-inbound-port", "0", path); err == nil || exitCode(err) != 2 {
		t.Errorf("bad flag: %v", err)
	}
}

// syncBuffer is a bytes.Buffer safe for the injector's logger and the
// test to use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestInjectorCommand runs `meshproxy injector` on 127.0.0.1:0 with a
// certificate made here and posts an AdmissionReview to it.
func TestInjectorCommand(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	certFile, keyFile, pool := writeTestCert(t, dir)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"injector", "-addr", "127.0.0.1:0", "-tls-cert", certFile, "-tls-key", keyFile},
			func(string) string { return "" }, &bytes.Buffer{}, &stderr)
	}()
	addrRE := regexp.MustCompile(`"injector listening","addr":"([^"]+)"`)
	var addr string
	for addr == "" {
		select {
		case err := <-done:
			t.Fatalf("injector exited: %v\n%s", err, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if m := addrRE.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
		}
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-","annotations":{"meshproxy.io/inject":"enabled"}},` +
		`"spec":{"containers":[{"name":"web","image":"example.com/web:1"}]}}`
	review := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1",` +
		`"kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},` +
		`"namespace":"shop","operation":"CREATE","userInfo":{"username":"admin"},"object":` + pod + `}}`
	resp, err := client.Post("https://"+addr+"/inject", "application/json", strings.NewReader(review))
	if err != nil {
		t.Fatal(err)
	}
	var got admissionv1.AdmissionReview
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if got.Response == nil || got.Response.UID != "u-1" || !got.Response.Allowed || !bytes.Contains(got.Response.Patch, []byte(`"/spec/initContainers"`)) {
		t.Fatalf("response %+v", got.Response)
	}
	resp, err = client.Get("https://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var metrics bytes.Buffer
	_, _ = metrics.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(metrics.String(), `injector_reviews_total{result="injected"} 1`) {
		t.Errorf("metrics:\n%s", metrics.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("injector: %v", err)
	}
}

func writeTestCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	cert := testcert.New(t, "meshproxy-injector.test")
	certFile, keyFile = cert.WriteFiles(t, dir)
	return certFile, keyFile, cert.Pool
}
