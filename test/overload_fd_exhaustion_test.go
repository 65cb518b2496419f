package test

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// Run with 64 file descriptors and pushed past them by silent connections,
// the proxy stays up, resets what waits in its backlog, counts and logs
// it, and answers /ready with 503; once the connections close it is ready
// again by itself and serves a good peer.
func TestOutOfFileDescriptorsNotReadyThenRecovers(t *testing.T) {
	const limit = 64
	m := meshtest.NewMesh(t)
	p := overloadProxy(t, m, meshtest.ProcessOptions{
		Start: func(cmd *exec.Cmd) error {
			if err := cmd.Start(); err != nil {
				return err
			}
			return unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: limit, Max: limit}, nil)
		},
	},
		// Silent connections must hold descriptors here, not be reset
		// by the pending caps, and not time out during the test.
		"--inbound-max-pending=1000", "--inbound-max-pending-per-source=1000", "--inbound-handshake-timeout=1m")
	app := echoApp(t)
	good := svid(t, m, "client", time.Hour)
	if err := meshEcho(p.Inbound, good, app); err != nil {
		t.Fatal(err)
	}
	// One admin connection, kept alive: a new one could not be accepted
	// while the proxy is out of descriptors.
	admin := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}, Timeout: 5 * time.Second}
	defer admin.CloseIdleConnections()
	ready := func() int {
		resp, err := admin.Get("http://" + p.Admin + "/ready")
		if err != nil {
			t.Fatalf("/ready: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body) // so the connection is reused
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := ready(); code != http.StatusOK {
		t.Fatalf("/ready = %d before the push", code)
	}

	var silent []net.Conn
	defer func() {
		for _, c := range silent {
			c.Close()
		}
	}()
	for range 2 * limit {
		c, err := net.DialTimeout("tcp", p.Inbound, 5*time.Second)
		if err != nil {
			continue // reset while connecting: shed
		}
		silent = append(silent, c)
	}
	meshtest.Eventually(t, "/ready to say not ready", func() bool { return ready() == http.StatusServiceUnavailable })
	// A client arriving now is reset at once rather than left waiting.
	if c, err := net.DialTimeout("tcp", p.Inbound, 5*time.Second); err == nil {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		if os.IsTimeout(err) {
			t.Error("a client arriving while out of descriptors was left waiting")
		}
	}
	if err := p.Cmd.Process.Signal(unix.Signal(0)); err != nil {
		t.Fatalf("the proxy died: %v", err)
	}

	for _, c := range silent {
		c.Close()
	}
	silent = nil
	meshtest.Eventually(t, "/ready to say ready again", func() bool { return ready() == http.StatusOK })
	if err := meshEcho(p.Inbound, good, app); err != nil {
		t.Errorf("a good peer after recovery: %v", err)
	}
	if n := p.Metric(t, "accept_errors_total", map[string]string{"direction": "inbound", "reason": "emfile"}); n == 0 {
		t.Error("accept_errors_total{direction=inbound,reason=emfile} = 0")
	}
	if n := p.Metric(t, "inbound_connections_shed_total", map[string]string{"reason": "fd_limit"}); n == 0 {
		t.Error("inbound_connections_shed_total{reason=fd_limit} = 0")
	}
	if !p.LogContains("out of file descriptors") {
		t.Error("nothing logged about running out of file descriptors")
	}
}
