package test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
	"github.com/seed722d2a70/meshproxy/test/netns"
)

// The pod test bed: network namespaces joined by a private LAN, each a
// "pod" whose TCP traffic `meshproxy init` redirects through a meshproxy
// process running as its own UID, next to real applications that know
// nothing of the proxy.

// proxyUID is the UID the pods' proxies run as, Linkerd's default. It
// needs no entry in /etc/passwd, as in a container.
const proxyUID = 2102

// podLAN and podLAN6 are the subnets of every test bed; they exist only
// inside the namespaces, so test beds running in parallel do not clash.
var (
	podLAN  = netip.MustParsePrefix("10.77.0.0/24")
	podLAN6 = netip.MustParsePrefix("fd77::/64")
)

// testBed is one LAN of pods sharing a mesh CA.
type testBed struct {
	lan  *netns.LAN
	mesh *meshtest.Mesh
	dir  string // readable by the proxies' UID
}

// pod is a network namespace on the LAN, with its proxy when meshed.
type pod struct {
	name  string
	ns    *netns.NS
	ip    netip.Addr        // in podLAN
	ip6   netip.Addr        // in podLAN6
	proxy *meshtest.Process // nil for an unmeshed pod
}

func newTestBed(t testing.TB) *testBed {
	t.Helper()
	netns.Require(t, "iptables-restore", "iptables-save", "ip6tables-restore", "ip6tables-save", "redis-server")
	dir, err := os.MkdirTemp("", "meshproxy-pods-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	// The proxies, running as proxyUID, read their identity files here.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &testBed{lan: netns.NewLAN(t, podLAN, podLAN6), mesh: meshtest.NewMesh(t), dir: dir}
}

// unmeshedPod adds a pod without a proxy or interception rules.
func (b *testBed) unmeshedPod(t testing.TB, name string) *pod {
	t.Helper()
	ns, ips := b.lan.Pod(t, "mp"+name)
	return &pod{name: name, ns: ns, ip: ips[0], ip6: ips[1]}
}

// meshedPod adds a pod whose traffic goes through a meshproxy with the
// identity spiffe://mesh.test/<name>: `meshproxy init` with initArgs
// installs the rules, then `meshproxy run --transparent` with runArgs
// starts the proxy as proxyUID. Destinations are its destination table.
func (b *testBed) meshedPod(t testing.TB, name string, destinations []podDest, initArgs []string, runArgs ...string) *pod {
	t.Helper()
	p := b.unmeshedPod(t, name)
	p.startProxy(t, writePodFiles(t, b.dir, b.mesh, name, meshtest.ID(name), destinations), initArgs, runArgs...)
	return p
}

// startProxy installs the pod's interception rules (`meshproxy init` with
// initArgs) and starts its proxy as proxyUID with the identity in files and
// runArgs.
func (p *pod) startProxy(t testing.TB, files podFiles, initArgs []string, runArgs ...string) {
	t.Helper()
	p.startProxyBinary(t, meshproxyBin, initArgs, append([]string{
		"--identity-cert=" + files.cert, "--identity-key=" + files.key, "--identity-bundle=" + files.bundle,
		"--config=" + files.config,
	}, runArgs...)...)
}

// startProxyBinary installs the pod's interception rules (`meshproxy init`
// with initArgs) and starts bin, a meshproxy binary, as the pod's proxy
// running as proxyUID with runArgs, which give its identity and
// configuration. A copy of the binary lets SPIRE tell proxies apart by path.
func (p *pod) startProxyBinary(t testing.TB, bin string, initArgs []string, runArgs ...string) {
	t.Helper()
	p.ns.MustRun(t, meshproxyBin, append([]string{"init", "--proxy-uid=" + strconv.Itoa(proxyUID)}, initArgs...)...)
	args := append([]string{"--transparent", "--dial-timeout=2s", "--shutdown-grace=1s"}, runArgs...)
	p.proxy = meshtest.StartProcessWith(t, bin, meshtest.ProcessOptions{
		Credential: &syscall.Credential{Uid: proxyUID, Gid: proxyUID},
		Start:      p.ns.Start,
		HTTPClient: p.httpClient(t),
	}, args...)
}

// podDest is a meshed destination in a pod proxy's table.
type podDest struct {
	Match       string // IP, or IP:port
	ID          string // SPIFFE ID its proxy presents
	InboundPort uint16 // 0: the default, 4143
	Address     string // dialed instead of the matched host, when set
}

// meshedIP is the destination table entry of a meshed pod.
func meshedIP(ip netip.Addr, name string) []podDest {
	return []podDest{{Match: ip.String(), ID: meshtest.ID(name).String()}}
}

type podFiles struct{ cert, key, bundle, config string }

// writePodFiles writes a pod's SVID (id, from mesh's CA), the trust bundle
// and its configuration into dir/name, owned by the proxy's UID.
func writePodFiles(t testing.TB, dir string, mesh *meshtest.Mesh, name string, id spiffeid.ID, destinations []podDest) podFiles {
	t.Helper()
	svid, err := mesh.CA.Issue(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	bundlePEM, _, err := mesh.CA.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(dir, name)
	f := podFiles{
		cert: filepath.Join(dir, "svid.pem"), key: filepath.Join(dir, "svid-key.pem"),
		bundle: filepath.Join(dir, "bundle.pem"), config: writePodConfig(t, dir, destinations),
	}
	for path, data := range map[string][]byte{f.cert: certPEM, f.key: keyPEM, f.bundle: bundlePEM} {
		writeProxyFile(t, path, data)
	}
	return f
}

// writePodConfig creates dir and writes there a proxy configuration with
// the destinations, owned by the proxy's UID, and returns its path.
func writePodConfig(t testing.TB, dir string, destinations []podDest) string {
	t.Helper()
	var cfg strings.Builder
	cfg.WriteString("destinations:\n")
	for _, d := range destinations {
		fmt.Fprintf(&cfg, "  - {match: %q, identity: [%q], inboundPort: %d, address: %q}\n", d.Match, d.ID, d.InboundPort, d.Address)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "meshproxy.yaml")
	writeProxyFile(t, path, []byte(cfg.String()))
	return path
}

// writeProxyFile writes a file only the proxy's UID may read.
func writeProxyFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, proxyUID, proxyUID); err != nil {
		t.Fatal(err)
	}
}

// dial connects from inside the pod, as an application there would.
func (p *pod) dial(t testing.TB, ip netip.Addr, port uint16) (net.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.ns.DialContext(ctx, "tcp", netip.AddrPortFrom(ip, port).String())
}

// httpClient is an HTTP client whose connections start inside the pod.
func (p *pod) httpClient(t testing.TB) *http.Client {
	tr := &http.Transport{DialContext: p.ns.DialContext, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

// get fetches http://ip:port/ from inside the pod and returns the body.
func (p *pod) get(t testing.TB, ip netip.Addr, port uint16) (string, error) {
	t.Helper()
	return getBody(p.httpClient(t), "http://"+netip.AddrPortFrom(ip, port).String()+"/")
}

// serveHTTP runs an HTTP server on port in the pod, answering with the
// client address it sees: 127.0.0.1 when the pod's proxy delivered the
// request, the client pod's IP when it came directly.
func (p *pod) serveHTTP(t testing.TB, port uint16) {
	t.Helper()
	ln, err := p.ns.Listen("tcp", ":"+strconv.Itoa(int(port)))
	if err != nil {
		t.Fatal(err)
	}
	p.serveHTTPOn(t, ln)
}

// serveHTTPOn is serveHTTP on a listener the caller opened in the pod.
func (p *pod) serveHTTPOn(t testing.TB, ln net.Listener) {
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			fmt.Fprintf(w, "%s from %s", p.name, host)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// serveEcho runs a TCP server on port in the pod that reads a line and
// answers it with the client address it sees (127.0.0.1 when the pod's
// proxy delivered the connection, the client's own IP when it came
// directly) followed by the line.
func (p *pod) serveEcho(t testing.TB, port uint16) {
	t.Helper()
	ln, err := p.ns.Listen("tcp", ":"+strconv.Itoa(int(port)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			line, _ := bufio.NewReader(c).ReadString('\n')
			_, _ = fmt.Fprintf(c, "%s %s", host, line)
			c.Close()
		}
	}()
}

// echo sends a line to ip:port from inside the pod and returns what the
// echo server answered: the client address it saw, then the line.
func (p *pod) echo(t testing.TB, ip netip.Addr, port uint16) (string, error) {
	t.Helper()
	c, err := p.dial(t, ip, port)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return strings.TrimSpace(string(b)), err
}

// startRedis runs redis-server on 6379 in the pod, listening on all its
// addresses as it would in a container.
func (p *pod) startRedis(t testing.TB, dir string) {
	t.Helper()
	dir = filepath.Join(dir, "redis-"+p.name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("redis-server", "--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no",
		"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", filepath.Join(dir, "redis.log"))
	if err := p.ns.Start(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Loopback inside the pod is never redirected.
		c, err := p.ns.Dial("tcp", "127.0.0.1:6379")
		if err == nil {
			reply, rerr := redisDo(c, "PING")
			c.Close()
			if rerr == nil && reply == "PONG" {
				return
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			t.Fatalf("redis-server did not come up in %s: %v\n%s", p.ns.Name, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metric is the sum of the pod proxy's series of name with the labels.
func (p *pod) metric(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	return p.proxy.Metric(t, name, labels)
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// natRules returns the pod's nat tables (IPv4 and, when present, IPv6) as
// iptables-save prints them, without comments and counters.
func (p *pod) natRules(t testing.TB) string {
	t.Helper()
	var out strings.Builder
	for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
		if _, err := exec.LookPath(cmd); err != nil {
			continue
		}
		for line := range strings.SplitSeq(p.ns.MustRun(t, cmd, "-t", "nat"), "\n") {
			if line != "" && !strings.HasPrefix(line, "#") {
				out.WriteString(counters.ReplaceAllString(line, "[0:0]") + "\n")
			}
		}
	}
	return out.String()
}

// startDaemon starts cmd in the pod, stops it when the test ends, and waits
// until it accepts connections on port (on the pod's loopback, which is
// never redirected). Its output goes to a file shown if it does not come up.
func (p *pod) startDaemon(t testing.TB, cmd *exec.Cmd, port uint16) {
	t.Helper()
	startDaemonWith(t, cmd, port, " in "+p.ns.Name, func() error { return p.ns.Start(cmd) }, p.ns.Dial)
}
