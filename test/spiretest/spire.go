//go:build linux

package spiretest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Defaults of Options.
const (
	DefaultTrustDomain = "example.org"
	// healthTimeout bounds how long a SPIRE process may take to be healthy.
	healthTimeout = 60 * time.Second
	// logTail is how many lines of each SPIRE log a failed test shows.
	logTail = 150
)

// Options configures Start. The zero value is ready to use.
type Options struct {
	// TrustDomain defaults to DefaultTrustDomain.
	TrustDomain string
	// BinDir holds spire-server and spire-agent; default Binaries(t).
	BinDir string
	// LogLevel of both processes: DEBUG, INFO (default), WARN or ERROR.
	LogLevel string
}

// Env is a running SPIRE server and agent. Its methods may be called from
// the test's goroutine only, except the plain accessors.
type Env struct {
	td       spiffeid.TrustDomain
	bin      string
	dir      string // confs, data and logs (t.TempDir)
	sockDir  string // short, world-searchable: unix socket paths are limited to 108 bytes
	logLevel string

	mu         sync.Mutex
	serverPort int
	server     *process
	agent      *process
}

// Start runs a SPIRE server and an agent attested to it, both stopped (with
// their process groups) when the test ends, even if it fails; on failure
// the end of their logs is printed.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	if opts.TrustDomain == "" {
		opts.TrustDomain = DefaultTrustDomain
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "INFO"
	}
	td, err := spiffeid.TrustDomainFromString(opts.TrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	if opts.BinDir == "" {
		opts.BinDir = Binaries(t)
	}
	base := os.TempDir()
	if len(base) > 40 { // keep socket paths far below the 108-byte limit
		base = "/tmp"
	}
	sockDir, err := os.MkdirTemp(base, "spire")
	if err != nil {
		t.Fatal(err)
	}
	// Workloads running under other uids must reach the agent socket.
	if err := os.Chmod(sockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	e := &Env{td: td, bin: opts.BinDir, dir: t.TempDir(), sockDir: sockDir, logLevel: opts.LogLevel}
	t.Cleanup(func() {
		e.mu.Lock()
		procs := []*process{e.agent, e.server}
		e.mu.Unlock()
		for _, p := range procs {
			if p != nil {
				p.stop()
			}
		}
		if t.Failed() {
			for _, p := range procs {
				if p != nil {
					t.Logf("--- %s log (%s):\n%s", p.name, p.logPath, p.tail(logTail))
				}
			}
		}
		_ = os.RemoveAll(sockDir)
	})

	e.startServer(t)
	token := e.serverCmd(t, "token", "generate", "-spiffeID", e.AgentID().String(), "-ttl", "600", "-output", "json")
	var tok struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal(token, &tok); err != nil || tok.Value == "" {
		t.Fatalf("spire-server token generate: %q: %v", token, err)
	}
	e.writeAgentConf(t)
	e.startAgent(t, "-joinToken", tok.Value)
	return e
}

// TrustDomain is the trust domain of the server.
func (e *Env) TrustDomain() spiffeid.TrustDomain { return e.td }

// AgentID is the alias under which entries are registered: their parent.
func (e *Env) AgentID() spiffeid.ID { return spiffeid.RequireFromPath(e.td, "/agent") }

// AgentSocket is the path of the agent's Workload API socket.
func (e *Env) AgentSocket() string { return filepath.Join(e.sockDir, "agent.sock") }

// AgentAddr is the Workload API address, as SPIFFE_ENDPOINT_SOCKET takes it.
func (e *Env) AgentAddr() string { return "unix://" + e.AgentSocket() }

// ServerSocket is the path of the server's admin API socket.
func (e *Env) ServerSocket() string { return filepath.Join(e.sockDir, "server.sock") }

// CreateEntry registers a workload entry for spiffeID under the agent,
// matching all of selectors (e.g. UIDSelector(0)), whose X509-SVIDs live
// x509TTL (0: the server default, 1 minute here). It returns the entry ID.
// The agent learns of it at its next sync, within about a second.
func (e *Env) CreateEntry(t testing.TB, spiffeID string, selectors []string, x509TTL time.Duration) string {
	t.Helper()
	args := []string{"entry", "create", "-parentID", e.AgentID().String(), "-spiffeID", spiffeID, "-output", "json"}
	for _, s := range selectors {
		args = append(args, "-selector", s)
	}
	if x509TTL > 0 {
		args = append(args, "-x509SVIDTTL", strconv.Itoa(int(x509TTL/time.Second)))
	}
	out := e.serverCmd(t, args...)
	var resp struct {
		Results []struct {
			Entry struct {
				ID string `json:"id"`
			} `json:"entry"`
			Status struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"status"`
		} `json:"results"`
	}
	if err := json.Unmarshal(out, &resp); err != nil || len(resp.Results) != 1 {
		t.Fatalf("spire-server entry create: %q: %v", out, err)
	}
	if r := resp.Results[0]; r.Status.Code != 0 || r.Entry.ID == "" {
		t.Fatalf("spire-server entry create %s: %s (code %d)", spiffeID, r.Status.Message, r.Status.Code)
	}
	return resp.Results[0].Entry.ID
}

// DeleteEntry removes an entry created by CreateEntry.
func (e *Env) DeleteEntry(t testing.TB, entryID string) {
	t.Helper()
	e.serverCmd(t, "entry", "delete", "-entryID", entryID)
}

// BundlePEM returns the trust bundle of the server's trust domain.
func (e *Env) BundlePEM(t testing.TB) []byte {
	t.Helper()
	return e.serverCmd(t, "bundle", "show", "-format", "pem")
}

// StopAgent stops the agent, as when it crashes or is upgraded: the
// Workload API socket goes away.
func (e *Env) StopAgent(t testing.TB) {
	t.Helper()
	e.mu.Lock()
	p := e.agent
	e.agent = nil
	e.mu.Unlock()
	if p != nil {
		p.stop()
	}
}

// StartAgent starts the agent again after StopAgent. It reuses the SVID
// the agent stored at its first attestation (the disk key manager keeps
// its key), as a restarted agent does, and waits until it is healthy.
func (e *Env) StartAgent(t testing.TB) {
	t.Helper()
	e.mu.Lock()
	running := e.agent != nil
	e.mu.Unlock()
	if running {
		t.Fatal("spiretest: StartAgent while the agent runs")
	}
	e.startAgent(t)
}

func (e *Env) startServer(t testing.TB) {
	t.Helper()
	// A free port can be taken between our probe and the server's bind; try
	// a few.
	for attempt := 1; ; attempt++ {
		port := freePort(t)
		conf := filepath.Join(e.dir, "server.conf")
		writeFile(t, conf, fmt.Sprintf(serverConf, port, e.ServerSocket(), e.td.Name(),
			filepath.Join(e.dir, "server-data"), e.logLevel, filepath.Join(e.dir, "server-data", "datastore.sqlite3")))
		p := startProcess(t, "spire-server", filepath.Join(e.dir, "server.log"), filepath.Join(e.bin, "spire-server"), "run", "-config", conf)
		e.mu.Lock()
		e.server, e.serverPort = p, port
		e.mu.Unlock()
		err := e.waitHealthy(p, "spire-server", e.ServerSocket())
		if err == nil {
			return
		}
		p.stop()
		if attempt == 3 {
			t.Fatalf("%v\n%s", err, p.tail(logTail))
		}
	}
}

func (e *Env) writeAgentConf(t testing.TB) {
	t.Helper()
	e.mu.Lock()
	port := e.serverPort
	e.mu.Unlock()
	data := filepath.Join(e.dir, "agent-data")
	writeFile(t, filepath.Join(e.dir, "agent.conf"), fmt.Sprintf(agentConf,
		data, e.logLevel, port, e.AgentSocket(), e.td.Name(), data))
}

func (e *Env) startAgent(t testing.TB, extra ...string) {
	t.Helper()
	conf := filepath.Join(e.dir, "agent.conf")
	args := append([]string{"run", "-config", conf}, extra...)
	p := startProcess(t, "spire-agent", filepath.Join(e.dir, "agent.log"), filepath.Join(e.bin, "spire-agent"), args...)
	e.mu.Lock()
	e.agent = p
	e.mu.Unlock()
	if err := e.waitHealthy(p, "spire-agent", e.AgentSocket()); err != nil {
		t.Fatalf("%v\n%s", err, p.tail(logTail))
	}
}

// waitHealthy runs `<bin> healthcheck` until it succeeds, the process
// exits, or healthTimeout passes.
func (e *Env) waitHealthy(p *process, bin, socket string) error {
	deadline := time.Now().Add(healthTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := exec.CommandContext(ctx, filepath.Join(e.bin, bin), "healthcheck", "-socketPath", socket).Run()
		cancel()
		switch {
		case err == nil:
			return nil
		case p.exited():
			return fmt.Errorf("%s exited before it was healthy", bin)
		case time.Now().After(deadline):
			return fmt.Errorf("%s not healthy after %s: %v", bin, healthTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// serverCmd runs a spire-server CLI command against the server and returns
// its standard output.
func (e *Env) serverCmd(t testing.TB, args ...string) []byte {
	t.Helper()
	args = append(args, "-socketPath", e.ServerSocket())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "spire-server"), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("spire-server %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return out
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
