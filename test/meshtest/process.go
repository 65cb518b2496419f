package meshtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/seed722d2a70/meshproxy/internal/logtest"
)

// Build compiles the sidecar build of cmd/meshproxy, the one pods run,
// into dir and returns the binary's path.
func Build(dir string) (string, error) {
	return build(filepath.Join(dir, "meshproxy"), "-tags", "sidecar")
}

// BuildFull compiles the full cmd/meshproxy, with the Kubernetes commands
// (destination, inject, ...), into dir as meshproxy-full.
func BuildFull(dir string) (string, error) {
	return build(filepath.Join(dir, "meshproxy-full"))
}

func build(bin string, flags ...string) (string, error) {
	args := append(append([]string{"build"}, flags...), "-o", bin, "github.com/seed722d2a70/meshproxy/cmd/meshproxy")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// Process is a meshproxy running as its own process.
type Process struct {
	Cmd     *exec.Cmd
	LogPath string
	Admin   string
	Inbound string
	// API is where a destination controller serves its API.
	API       string
	Listeners []string
	done      chan error
	client    *http.Client
}

// StartProcess runs `bin run args...` with JSON logs to a file, waits until
// it logs that it is ready, and learns its addresses from the log, so every
// listener can be given as 127.0.0.1:0. The process gets SIGTERM when the
// test ends and must then exit 0.
func StartProcess(t testing.TB, bin string, env []string, args ...string) *Process {
	t.Helper()
	return StartProcessWith(t, bin, ProcessOptions{Env: env}, args...)
}

// ProcessOptions say how StartProcessWith runs meshproxy.
type ProcessOptions struct {
	// Env is added to the test's environment.
	Env []string
	// Credential, when set, runs the process as another user, as a
	// sidecar runs under its own UID.
	Credential *syscall.Credential
	// Start starts the command; nil means cmd.Start. A test bed passes a
	// function that starts it inside a network namespace.
	Start func(*exec.Cmd) error
	// HTTPClient reaches the admin server; nil means http.DefaultClient.
	// A proxy in a network namespace needs a client that dials there.
	HTTPClient *http.Client
	// Command is the meshproxy command run: "run" (the default) or
	// "destination", the destination controller, whose readiness here is
	// its having logged its addresses (its /ready also waits for the
	// Kubernetes API).
	Command string
}

// StartProcessWith is StartProcess with options.
func StartProcessWith(t testing.TB, bin string, opts ProcessOptions, args ...string) *Process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "meshproxy.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	command := opts.Command
	if command == "" {
		command = "run"
	}
	cmd := exec.Command(bin, append([]string{command, "-log-format", "json"}, args...)...)
	cmd.Env = append(os.Environ(), opts.Env...)
	cmd.Stderr, cmd.Stdout = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: opts.Credential}
	start := opts.Start
	if start == nil {
		start = (*exec.Cmd).Start
	}
	if err := start(cmd); err != nil {
		t.Fatal(err)
	}
	p := &Process{Cmd: cmd, LogPath: logPath, done: make(chan error, 1), client: opts.HTTPClient}
	if p.client == nil {
		p.client = http.DefaultClient
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if p.Stop(t) != nil || t.Failed() {
			t.Logf("--- meshproxy log %s:\n%s", logPath, p.Log())
		}
	})
	if err := p.waitReady(30 * time.Second); err != nil {
		t.Fatalf("meshproxy did not start: %v\n%s", err, p.Log())
	}
	return p
}

// Stop sends SIGTERM and waits for a clean exit; it reports an unclean one
// as a test error. It is safe to call more than once.
func (p *Process) Stop(t testing.TB) error {
	if p.done == nil {
		return nil
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-p.done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		err = <-p.done
	}
	p.done = nil
	if err != nil {
		t.Errorf("meshproxy did not exit cleanly on SIGTERM: %v", err)
	}
	return err
}

// Log returns the process's log so far.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// CheckLogKeys fails t for every line of the process's JSON log so far that
// is not JSON or repeats a key. It returns the number of lines checked.
func (p *Process) CheckLogKeys(t testing.TB) int {
	t.Helper()
	return logtest.CheckLines(t, []byte(p.Log()))
}

func (p *Process) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			p.done = nil
			return fmt.Errorf("exited: %v", err)
		default:
		}
		if p.parseAddrs() {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %v", timeout)
}

// parseAddrs reads the log lines that name listening addresses and reports
// whether the proxy has said it is ready.
func (p *Process) parseAddrs() bool {
	f, err := os.Open(p.LogPath)
	if err != nil {
		return false
	}
	defer f.Close()
	p.Listeners = nil
	ready := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var line struct {
			Msg         string `json:"msg"`
			Addr        string `json:"addr"`
			InboundAddr string `json:"inbound_addr"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		switch line.Msg {
		case "admin server listening":
			p.Admin = line.Addr
		case "outbound listener":
			p.Listeners = append(p.Listeners, line.Addr)
		case "proxy ready":
			p.Inbound = line.InboundAddr
			ready = true
		case "destination controller starting":
			p.API = line.Addr
			ready = true
		}
	}
	return ready
}

// Ready reports what the proxy's /ready says.
func (p *Process) Ready() bool {
	resp, err := p.client.Get("http://" + dialable(p.Admin) + "/ready")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Scrape fetches and parses the proxy's /metrics.
func (p *Process) Scrape(t testing.TB) []*dto.MetricFamily {
	t.Helper()
	resp, err := p.client.Get("http://" + dialable(p.Admin) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*dto.MetricFamily, 0, len(families))
	for _, f := range families {
		out = append(out, f)
	}
	return out
}

// Fetch returns the body of a GET of path (e.g. "/debug/pprof/heap") on
// the proxy's admin port, from the proxy's network namespace.
func (p *Process) Fetch(path string) ([]byte, error) {
	resp, err := p.client.Get("http://" + dialable(p.Admin) + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return body, nil
}

// Metric is Sum over a fresh scrape.
func (p *Process) Metric(t testing.TB, name string, want map[string]string) float64 {
	t.Helper()
	return Sum(p.Scrape(t), name, want)
}

// LogContains reports whether the log has a line containing s.
func (p *Process) LogContains(s string) bool { return strings.Contains(p.Log(), s) }

// dialable turns a listening address on all interfaces (0.0.0.0 or [::],
// which Go reports as [::]) into the loopback address on the same port.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err == nil && ip != nil && ip.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}
