package test

import (
	"bytes"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// transparentDetectTimeout is the client proxies' detection timeout here:
// short, so that waiting it out is cheap, and long enough to tell apart.
const transparentDetectTimeout = time.Second

// Server-speaks-first protocols through transparent interception, with the
// real servers in the server pod. MariaDB on 3306, opaque by default, is
// carried to 4143 with no detection at all; the mariadb command-line client
// in the client pod logs in and runs a query through both proxies. NATS on 4222 is not in the
// default opaque list: with speculation off, the client's proxy waits out
// the detection timeout (logging it) before the greeting reaches the app,
// then carries the connection as opaque; a client pod whose proxy marks
// 4222 opaque gets it with no detection. An unmeshed client reaching
// MariaDB is not sniffed by the server's inbound proxy either: on an opaque
// port, the bytes arriving on the app port cannot be a peer proxy's.
func TestTransparentServerFirstProtocols(t *testing.T) {
	t.Parallel()
	bed := newTestBed(t)
	serverIP := podLAN.Addr().Next().Next().Next()
	installDB, mariadbd, natsServer := lookBin(t, "mariadb-install-db"), lookBin(t, "mariadbd"), lookBin(t, "nats-server")
	dests := meshedIP(serverIP, "server")
	stalling := bed.meshedPod(t, "client", dests, nil,
		"--detect-timeout="+transparentDetectTimeout.String(), "--detect-speculate-after=0")
	opaque := bed.meshedPod(t, "client2", dests, nil,
		"--detect-timeout="+transparentDetectTimeout.String(), "--detect-speculate-after=0", "--opaque-ports=3306,4222")
	server := bed.meshedPod(t, "server", nil, nil)
	unmeshed := bed.unmeshedPod(t, "plain")
	if server.ip != serverIP {
		t.Fatalf("server pod got %v, want %v", server.ip, serverIP)
	}

	data := filepath.Join(bed.dir, "mariadb")
	if out, err := exec.Command(installDB, "--no-defaults", "--datadir="+data, "--user=root",
		"--auth-root-authentication-method=normal", "--skip-test-db").CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	server.startDaemon(t, exec.Command(mariadbd, "--no-defaults", "--datadir="+data, "--user=root",
		"--bind-address=0.0.0.0", "--port=3306", "--socket="+filepath.Join(data, "mysqld.sock"),
		"--pid-file="+filepath.Join(data, "mysqld.pid"), "--skip-log-bin", "--log-error="+filepath.Join(data, "error.log")), 3306)
	server.startDaemon(t, exec.Command(natsServer, "-a", "0.0.0.0", "-p", "4222"), 4222)

	// greeting connects from pod p to the server's port, reads the
	// server's first bytes and returns them with the time they took.
	greeting := func(p *pod, port uint16) ([]byte, time.Duration, io.ReadWriteCloser) {
		t.Helper()
		start := time.Now()
		c, err := p.dial(t, server.ip, port)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetReadDeadline(time.Now().Add(8 * time.Second))
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no greeting on port %d from the %s pod: %v", port, p.name, err)
		}
		_ = c.SetReadDeadline(time.Time{})
		return buf[:n], time.Since(start), c
	}
	isMariaDB := func(b []byte) bool { return len(b) > 5 && b[4] == 10 } // protocol version 10
	detections := func(p *pod) float64 {
		return p.metric(t, "protocol_detect_total", map[string]string{"direction": "outbound"})
	}

	if b, _, _ := greeting(stalling, 3306); !isMariaDB(b) {
		t.Errorf("port 3306: %q is not a MariaDB greeting", b)
	}
	// The real client, run in the pod as any app, logs in and queries
	// through both proxies (the server sees it coming from loopback, so as
	// root@localhost).
	if out, err := stalling.ns.Run(lookBin(t, "mariadb"), "--no-defaults", "--protocol=tcp", "-h", server.ip.String(),
		"-P", "3306", "-u", "root", "--connect-timeout=10", "-N", "-e", "SELECT 6*7"); err != nil || strings.TrimSpace(out) != "42" {
		t.Errorf("mariadb client from the client pod: %q, %v", out, err)
	}
	if n := detections(stalling); n != 0 {
		t.Errorf("MariaDB on the default opaque port was detected (%v detections)", n)
	}

	b, took, c := greeting(stalling, 4222)
	t.Logf("NATS greeting on a port not marked opaque: %v (detection timeout %v)", took, transparentDetectTimeout)
	if !bytes.HasPrefix(b, []byte("INFO ")) {
		t.Fatalf("port 4222: %q is not a NATS greeting", b)
	}
	if took < transparentDetectTimeout {
		t.Errorf("greeting after %v, want at least the %v detection timeout", took, transparentDetectTimeout)
	}
	if n := stalling.metric(t, "protocol_detect_total", map[string]string{"direction": "outbound", "result": "timeout"}); n != 1 {
		t.Errorf("detection timeouts = %v, want 1", n)
	}
	if msg := "protocol detection timed out after 1s"; !stalling.proxy.LogContains(msg) {
		t.Errorf("no log line %q", msg)
	}
	// Then the connection is carried as opaque TCP.
	if _, err := io.WriteString(c, "CONNECT {}\r\nPING\r\n"); err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, 64)
	n, err := c.Read(reply)
	if err != nil || !strings.Contains(string(reply[:n]), "PONG") {
		t.Errorf("NATS PING after the timeout: %q, %v", reply[:n], err)
	}

	b, took, _ = greeting(opaque, 4222)
	t.Logf("NATS greeting on a port marked opaque: %v", took)
	if !bytes.HasPrefix(b, []byte("INFO ")) {
		t.Fatalf("port 4222 marked opaque: %q is not a NATS greeting", b)
	}
	if n := detections(opaque); n != 0 {
		t.Errorf("port marked opaque was detected (%v detections)", n)
	}

	if b, _, _ := greeting(unmeshed, 3306); !isMariaDB(b) {
		t.Errorf("unmeshed client on 3306: %q is not a MariaDB greeting", b)
	}
	if n := server.metric(t, "protocol_detect_total", map[string]string{"direction": "inbound"}); n != 0 {
		t.Errorf("the server's inbound proxy sniffed %v connections on an opaque port, want none", n)
	}

	// Every meshed connection reached the server's proxy on 4143 with its
	// client's identity.
	for _, p := range []*pod{stalling, opaque} {
		id := meshtest.ID(p.name).String()
		if n := server.metric(t, "tcp_open_total", map[string]string{
			"direction": "inbound", "peer": "src", "tls": "true", "client_id": id, "target_addr": server.ip.String() + ":4143",
		}); n != float64(map[string]int{"client": 3, "client2": 1}[p.name]) {
			t.Errorf("server proxy: %v mTLS connections from %s on 4143", n, id)
		}
	}
}
