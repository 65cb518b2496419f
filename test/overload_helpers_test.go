package test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/seed722d2a70/meshproxy/internal/header"
	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// The overload tests run meshproxy as its own process, so that its RSS and
// file descriptors can be read from /proc, and flood it from helper
// processes (this test binary re-executed), since the flood needs more
// sockets than one process may open.

// floodHelperEnv, when set in the environment, makes the test binary a
// flood helper (see TestMain): "MODE SRC ADDR COUNT", MODE silent (open
// COUNT connections from SRC to ADDR and say nothing) or slow (the same,
// then send each a ClientHello one byte a second). The helper prints
// "connected N refused M" once all were tried and closes everything when
// its standard input closes.
const floodHelperEnv = "MESHPROXY_TEST_FLOOD_HELPER"

// floodHelper runs a flood helper and returns its exit code.
func floodHelper(spec string) int {
	var mode, src, addr string
	var count int
	if _, err := fmt.Sscan(spec, &mode, &src, &addr, &count); err != nil {
		fmt.Fprintln(os.Stderr, "flood helper:", err)
		return 2
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	conns := make([]net.Conn, 0, count)
	refused := 0
	for range count {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			refused++
			continue
		}
		conns = append(conns, c)
	}
	fmt.Printf("connected %d refused %d\n", len(conns), refused)
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(done) }()
	if mode == "slow" {
		hello := clientHello()
		for i := 0; ; i++ {
			select {
			case <-done:
				return closeAll(conns)
			case <-time.After(time.Second):
			}
			for _, c := range conns {
				_, _ = c.Write(hello[i%len(hello) : i%len(hello)+1])
			}
		}
	}
	<-done
	return closeAll(conns)
}

func closeAll(conns []net.Conn) int {
	for _, c := range conns {
		_ = c.Close()
	}
	return 0
}

// clientHello returns the first flight of a TLS 1.3 client offering the
// transport header protocol, as a slow peer would send it.
func clientHello() []byte {
	a, b := net.Pipe()
	go func() {
		_ = tls.Client(a, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{header.ALPN}}).Handshake()
	}()
	buf := make([]byte, 4096)
	n, _ := b.Read(buf)
	a.Close()
	b.Close()
	return buf[:n]
}

// floodProcess is a running flood helper.
type floodProcess struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	report chan string
}

// startFlood starts a helper; see floodHelperEnv.
func startFlood(t *testing.T, mode, src, addr string, count int) *floodProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s %d", floodHelperEnv, mode, src, addr, count))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &floodProcess{cmd: cmd, stdin: stdin, report: make(chan string, 1)}
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		f.report <- strings.TrimSpace(line)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	t.Cleanup(func() { f.stop() })
	return f
}

// stop makes the helper close its connections and waits for it.
func (f *floodProcess) stop() {
	if f.stdin != nil {
		_ = f.stdin.Close()
		f.stdin = nil
		_ = f.cmd.Wait()
	}
}

// overloadProxy starts meshproxy as a process with an identity from m and
// extra args, listening on 127.0.0.1.
func overloadProxy(t *testing.T, m *meshtest.Mesh, opts meshtest.ProcessOptions, args ...string) *meshtest.Process {
	t.Helper()
	s := svid(t, m, "server", time.Hour)
	certPEM, keyPEM, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	bundlePEM, _, err := m.CA.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string][]byte{"svid.pem": certPEM, "key.pem": keyPEM, "bundle.pem": bundlePEM}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return meshtest.StartProcessWith(t, meshproxyBin, opts, append([]string{
		"--identity-cert=" + filepath.Join(dir, "svid.pem"), "--identity-key=" + filepath.Join(dir, "key.pem"),
		"--identity-bundle=" + filepath.Join(dir, "bundle.pem"),
		"--inbound-addr=127.0.0.1:0", "--outbound-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0",
		"--shutdown-grace=1s",
	}, args...)...)
}

// meshEcho plays a good peer proxy: mTLS with s, a transport header naming
// port, then a round trip through the echo app there.
func meshEcho(addr string, s *x509svid.SVID, port uint16) error {
	certs, key, err := s.Marshal()
	if err != nil {
		return err
	}
	cert, err := tls.X509KeyPair(certs, key)
	if err != nil {
		return err
	}
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	c := tls.Client(raw, &tls.Config{
		MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, NextProtos: []string{header.ALPN},
		Certificates: []tls.Certificate{cert},
	})
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if err := header.Write(c, header.Header{Port: port}); err != nil {
		return fmt.Errorf("header: %w", err)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	if !bytes.Equal(buf, []byte("ping")) {
		return fmt.Errorf("echo: got %q", buf)
	}
	return nil
}

// procStatus returns a process's RSS in bytes and its open descriptors.
func procStatus(t *testing.T, pid int) (rss int64, fds int) {
	t.Helper()
	rss, fds, err := readProcStatus(pid)
	if err != nil {
		t.Fatal(err)
	}
	return rss, fds
}

// readProcStatus is procStatus for any goroutine.
func readProcStatus(pid int) (rss int64, fds int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			rss = kb << 10
		}
	}
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, 0, err
	}
	return rss, len(entries), nil
}

// percentile returns the p-th percentile (0..1) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(p*float64(len(s))))]
}
