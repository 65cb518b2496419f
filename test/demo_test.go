package test

import (
	"bufio"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The README's first command, `make demo`, runs scripts/demo.sh: a mesh of
// two proxies with the embedded dev CA in front of a demo app. It comes up,
// carries HTTP and opaque traffic as it says, and cleans up on Ctrl-C.
func TestDemoMeshFromTheREADME(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "demoapp")
	if out, err := exec.Command("go", "build", "-o", app, "github.com/seed722d2a70/meshproxy/cmd/demoapp").CombinedOutput(); err != nil {
		t.Fatalf("building demoapp: %v\n%s", err, out)
	}
	base := freePortBase(t)
	cmd := exec.Command("bash", "../scripts/demo.sh")
	cmd.Env = append(os.Environ(), "MESHPROXY_BIN="+meshproxyBin, "DEMOAPP_BIN="+app,
		"DEMO_PORT_BASE="+strconv.Itoa(base), "TMPDIR="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	})

	// Wait for the banner, then keep draining stdout.
	running := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Press Ctrl-C to stop") {
				close(running)
			}
		}
		exited <- cmd.Wait()
	}()
	select {
	case <-running:
	case err := <-exited:
		t.Fatalf("demo exited before it was running: %v\n%s", err, stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("demo not running after 60s\n%s", stderr.String())
	}

	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(base+1080) + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "hello from the demo app") {
		t.Errorf("HTTP through the demo mesh: %q", body)
	}
	out, err := exec.Command(app, "-dial", "127.0.0.1:"+strconv.Itoa(base+1007), "-send", "opaque hello").Output()
	if err != nil || string(out) != "opaque hello\n" {
		t.Errorf("opaque echo through the demo mesh: %q, %v", out, err)
	}
	metrics, err := http.Get("http://127.0.0.1:" + strconv.Itoa(base+191) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(metrics.Body)
	metrics.Body.Close()
	if !strings.Contains(string(text), `client_id="spiffe://demo.local/client"`) {
		t.Errorf("server proxy metrics do not show the client's identity")
	}

	// Ctrl-C stops everything and removes the work directory.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("demo exited with %v after Ctrl-C\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo still running 30s after Ctrl-C")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "meshproxy-demo.*")); len(left) > 0 {
		t.Errorf("demo left %v behind", left)
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(base+1080), time.Second); err == nil {
		c.Close()
		t.Error("client proxy still listening after Ctrl-C")
	}
}

// freePortBase finds a base port from which the demo's ports (base+7 to
// base+1191) are all free right now.
func freePortBase(t *testing.T) int {
	t.Helper()
	offsets := []int{7, 80, 140, 143, 191, 1007, 1080, 1140, 1143, 1191}
	for range 50 {
		base := 20000 + rand.IntN(20000)
		free := true
		for _, off := range offsets {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+off))
			if err != nil {
				free = false
				break
			}
			ln.Close()
		}
		if free {
			return base
		}
	}
	t.Fatal("no free port range for the demo")
	return 0
}
