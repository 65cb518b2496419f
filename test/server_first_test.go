package test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// serverFirstTimeout is the detection timeout of these tests: long enough
// that a greeting arriving before it was not waited for.
const serverFirstTimeout = 3 * time.Second

// Server-speaks-first protocols on ports nobody marked opaque (NATS on
// 4222's kind of port, MariaDB on a non-default port) get their greeting
// without the detection stall: the client proxy connects speculatively once
// the client has been silent for the grace period, and the server's first
// bytes settle it. With speculation off the same connection waits out the
// detection timeout. Later connections to a learned destination skip
// detection altogether.
func TestServerFirstProtocolsWithoutTheStall(t *testing.T) {
	servers := []struct {
		name  string
		start func(t *testing.T) uint16
		// greeted reports whether the first bytes are the server's greeting.
		greeted func(b []byte) bool
	}{
		{"nats", natsApp, func(b []byte) bool { return len(b) > 5 && string(b[:5]) == "INFO " }},
		{"mariadb", mariadbApp, func(b []byte) bool { return len(b) > 5 && b[4] == 10 }}, // protocol version 10
	}
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			port := srv.start(t)
			timeToGreeting := func(p *pair) time.Duration {
				t.Helper()
				start := time.Now()
				c := dialTCP(t, p.listen)
				_ = c.SetReadDeadline(time.Now().Add(2 * serverFirstTimeout))
				buf := make([]byte, 512)
				n, err := c.Read(buf)
				if err != nil || !srv.greeted(buf[:n]) {
					t.Fatalf("no greeting from %s: %q, %v", srv.name, buf[:n], err)
				}
				return time.Since(start)
			}

			on := startPair(t, port, pairOptions{clientCfg: func(c *config.Config) { c.Detect.Timeout = serverFirstTimeout }})
			first := timeToGreeting(on)
			t.Logf("%s: time to greeting with speculation: %v (detection timeout %v)", srv.name, first, serverFirstTimeout)
			if first >= serverFirstTimeout {
				t.Errorf("greeting took %v: the detection timeout was waited out", first)
			}
			if n := on.client.Metric(t, "protocol_detect_total", map[string]string{"result": "server_first"}); n != 1 {
				t.Errorf("server_first detections = %v, want 1", n)
			}
			second := timeToGreeting(on)
			t.Logf("%s: time to greeting once learned: %v", srv.name, second)
			if n := on.client.Metric(t, "protocol_detect_total", map[string]string{"result": "learned"}); n != 1 {
				t.Errorf("learned detections = %v, want 1", n)
			}
			if n := on.client.Metric(t, "protocol_detect_server_first_destinations", nil); n != 1 {
				t.Errorf("protocol_detect_server_first_destinations = %v, want 1", n)
			}

			off := startPair(t, port, pairOptions{clientCfg: func(c *config.Config) {
				c.Detect.Timeout = serverFirstTimeout
				c.Detect.SpeculateAfter = 0
			}})
			stalled := timeToGreeting(off)
			t.Logf("%s: time to greeting without speculation: %v", srv.name, stalled)
			if stalled < serverFirstTimeout {
				t.Errorf("greeting after %v without speculation, want the %v detection timeout", stalled, serverFirstTimeout)
			}
			if len(off.client.LogsContaining("protocol detection timed out after 3s")) != 1 {
				t.Errorf("no log line %q", "protocol detection timed out after 3s")
			}
		})
	}
}

// An HTTP client that waits longer than the grace period before sending
// its request still gets HTTP handling; the server sees at most the one
// speculative connection, dropped.
func TestSlowHTTPClientStillDetectedAsHTTP(t *testing.T) {
	var accepted atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello") }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				accepted.Add(1)
			}
		},
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	p := startPair(t, portOf(ln), pairOptions{clientCfg: func(c *config.Config) { c.Detect.Timeout = serverFirstTimeout }})

	c := dialTCP(t, p.listen)
	time.Sleep(500 * time.Millisecond) // silent for longer than the 100 ms grace period
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "hello" {
		t.Fatalf("body %q", body)
	}
	if n := p.client.Metric(t, "protocol_detect_total", map[string]string{"result": "http1"}); n != 1 {
		t.Errorf("http1 detections = %v, want 1", n)
	}
	// Counted as an HTTP request, so handled at the HTTP level.
	if n := p.client.Metric(t, "request_total", map[string]string{"direction": "outbound"}); n != 1 {
		t.Errorf("outbound HTTP requests counted = %v, want 1", n)
	}
	if n := accepted.Load(); n > 2 {
		t.Errorf("the server accepted %d connections, want at most 2 (one speculative, dropped)", n)
	}
}

// natsApp starts a real nats-server (Debian's) on a free loopback port.
func natsApp(t *testing.T) uint16 {
	bin := lookBin(t, "nats-server")
	port := freePort(t)
	startDaemon(t, exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(int(port))), port)
	return port
}

// mariadbApp starts a real MariaDB server (Debian's) with a fresh data
// directory on a free loopback port, as MySQL on a non-default port.
func mariadbApp(t *testing.T) uint16 {
	installDB := lookBin(t, "mariadb-install-db")
	server := lookBin(t, "mariadbd")
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if out, err := exec.Command(installDB, "--no-defaults", "--datadir="+data, "--user=root",
		"--auth-root-authentication-method=normal", "--skip-test-db").CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	port := freePort(t)
	startDaemon(t, exec.Command(server, "--no-defaults", "--datadir="+data, "--user=root",
		"--bind-address=127.0.0.1", "--port="+strconv.Itoa(int(port)), "--socket="+filepath.Join(dir, "mysqld.sock"),
		"--pid-file="+filepath.Join(dir, "mysqld.pid"), "--skip-log-bin", "--log-error="+filepath.Join(dir, "error.log")), port)
	return port
}

// lookBin finds a server binary on PATH or in /usr/sbin, where Debian
// puts daemons.
func lookBin(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := filepath.Join("/usr/sbin", name); fileExists(p) {
		return p
	}
	t.Fatalf("%s not installed (make test installs it via scripts/deps.sh)", name)
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// startDaemon starts cmd, stops it when the test ends, and waits until it
// accepts connections on port.
func startDaemon(t *testing.T, cmd *exec.Cmd, port uint16) {
	t.Helper()
	startDaemonWith(t, cmd, port, "", cmd.Start, net.Dial)
}

// startDaemonWith starts cmd with start, stops it when the test ends, and
// waits until dial reaches 127.0.0.1:port (where says where that is, for
// the error). Its output goes to a file shown if it does not come up.
func startDaemonWith(t testing.TB, cmd *exec.Cmd, port uint16, where string, start func() error, dial func(network, addr string) (net.Conn, error)) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "daemon.log")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	if err := start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := meshtest.Join("127.0.0.1", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(out)
			t.Fatalf("%s not listening on %s%s: %v\n%s", cmd.Path, addr, where, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
