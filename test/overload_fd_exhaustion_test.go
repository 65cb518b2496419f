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
// it, and answers /ready with 503, while /live still answers kubelet-style
// probes (a new connection each, a 1 s timeout): the accept loops leave a
// reserve of descriptors to the rest of the process. Once the connections
// close it is ready again by itself and serves a good peer.
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
	// As kubelet probes: a new connection each time, a 1 s timeout.
	probe := func(path string) (int, error) {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
		resp, err := c.Get("http://" + p.Admin + path)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	ready := func() int { code, _ := probe("/ready"); return code }
	if code, err := probe("/ready"); code != http.StatusOK {
		t.Fatalf("/ready = %d, %v before the push", code, err)
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
	// Liveness must hold for as long as the shortage lasts: kubelet
	// restarts the container after three failures in a row.
	for i := range 5 {
		if code, err := probe("/live"); code != http.StatusOK {
			t.Errorf("probe %d while out of descriptors: /live = %d, %v", i, code, err)
		}
		if code, err := probe("/ready"); code != http.StatusServiceUnavailable {
			t.Errorf("probe %d while out of descriptors: /ready = %d, %v", i, code, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
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
	// The reserve usually keeps accept from failing at all; when it does
	// fail, it is counted as emfile.
	t.Logf("accept_errors_total{direction=inbound,reason=emfile} = %v",
		p.Metric(t, "accept_errors_total", map[string]string{"direction": "inbound", "reason": "emfile"}))
	if n := p.Metric(t, "inbound_connections_shed_total", map[string]string{"reason": "fd_limit"}); n == 0 {
		t.Error("inbound_connections_shed_total{reason=fd_limit} = 0")
	}
	if !p.LogContains("out of file descriptors") {
		t.Error("nothing logged about running out of file descriptors")
	}
}
