package test

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// BenchmarkKubeServiceVsStatic measures what resolving a destination through
// the destination controller costs on the data path: one client pod reaches
// the same meshed server pod two ways, through its Service's ClusterIP
// (resolved by the controller, balanced over the Service's one endpoint), and
// through a static destination: an address the controller does not know,
// which the proxy's destination table sends to the pod. One client, one
// proxy, one server: only the route differs. Each iteration does one of
// each, alternately, so that both see the same machine; the reported ratios
// are service / static:
//
//   - connect: a new connection, a line echoed, closed (opaque, to 4143);
//   - http: a keep-alive GET on a connection kept open.
//
// Run by `make bench` (needs root, like the namespace test bed).
func BenchmarkKubeServiceVsStatic(b *testing.B) {
	bed := newKubeBed(b)
	const ns = "bench"
	app := map[string]string{"app": "server"}
	server := bed.pod(b, kubePod{namespace: ns, name: "server-0", serviceAccount: "server", labels: app,
		ports: []corev1.ContainerPort{{Name: "echo", ContainerPort: 9000}, {Name: "http", ContainerPort: 8080}}})
	server.serveEcho(b, 9000)
	server.serveHTTP(b, 8080)
	vip := bed.service(b, ns, "server", map[string]string{"config.meshproxy.io/opaque-ports": "9000"}, app,
		corev1.ServicePort{Name: "echo", Port: 9000, TargetPort: intstr.FromString("echo")},
		corev1.ServicePort{Name: "http", Port: 8080, TargetPort: intstr.FromString("http")})
	serverID := "spiffe://" + meshtest.TrustDomain + "/ns/" + ns + "/sa/server"
	// TEST-NET-1: no Service or pod has it, so the table decides, and
	// dials the server pod for it.
	staticIP := netip.MustParseAddr("192.0.2.10")
	client := bed.pod(b, kubePod{namespace: ns, name: "client", runArgs: []string{"--opaque-ports=9000"},
		destinations: []podDest{{Match: staticIP.String(), ID: serverID, Address: server.ip.String()}}})

	echo := func(to netip.Addr) time.Duration {
		start := time.Now()
		got, err := client.echo(b, to, 9000)
		if err != nil || !strings.HasSuffix(got, "hello") {
			b.Fatalf("echo to %s: %q, %v", to, got, err)
		}
		return time.Since(start)
	}
	get := func(c *keepAlive) time.Duration {
		start := time.Now()
		if err := c.get(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	meshtest.Eventually(b, "the Service to be resolved", func() bool {
		_, err := client.echo(b, vip, 9000)
		return err == nil
	})
	svcHTTP, staticHTTP := newKeepAlive(b, client, vip, 8080), newKeepAlive(b, client, staticIP, 8080)
	for range 20 { // warm: TLS sessions, pools, the table's lookup of the static IP
		echo(vip)
		echo(staticIP)
		get(svcHTTP)
		get(staticHTTP)
	}
	if n := client.metric(b, "outbound_destination_lookups_total", map[string]string{"result": "unknown"}); n == 0 {
		b.Fatal("the static address was not left to the table")
	}

	var svcConn, staticConn, svcReq, staticReq time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		// Alternate which goes first, so neither always follows the other.
		if i%2 == 0 {
			svcConn += echo(vip)
			staticConn += echo(staticIP)
			svcReq += get(svcHTTP)
			staticReq += get(staticHTTP)
		} else {
			staticConn += echo(staticIP)
			svcConn += echo(vip)
			staticReq += get(staticHTTP)
			svcReq += get(svcHTTP)
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(svcConn.Microseconds())/n, "service-connect-µs")
	b.ReportMetric(float64(staticConn.Microseconds())/n, "static-connect-µs")
	b.ReportMetric(float64(svcConn)/float64(staticConn), "connect-ratio")
	b.ReportMetric(float64(svcReq.Microseconds())/n, "service-http-µs")
	b.ReportMetric(float64(staticReq.Microseconds())/n, "static-http-µs")
	b.ReportMetric(float64(svcReq)/float64(staticReq), "http-ratio")
	b.ReportMetric(0, "ns/op") // the pairs' own figures above say it all
}

// keepAlive is one HTTP/1.1 connection from a pod, reused for every GET.
type keepAlive struct {
	tb  testing.TB
	c   io.ReadWriteCloser
	r   *bufio.Reader
	req string
}

func newKeepAlive(tb testing.TB, p *pod, ip netip.Addr, port uint16) *keepAlive {
	tb.Helper()
	c, err := p.dial(tb, ip, port)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return &keepAlive{tb: tb, c: c, r: bufio.NewReader(c), req: fmt.Sprintf("GET / HTTP/1.1\r\nHost: %s\r\n\r\n", netip.AddrPortFrom(ip, port))}
}

// get sends a GET and reads the whole answer, which the test servers send
// with a Content-Length.
func (k *keepAlive) get() error {
	if _, err := io.WriteString(k.c, k.req); err != nil {
		return err
	}
	length := -1
	for {
		line, err := k.r.ReadString('\n')
		if err != nil {
			return err
		}
		if v, ok := strings.CutPrefix(strings.ToLower(line), "content-length:"); ok {
			_, _ = fmt.Sscan(strings.TrimSpace(v), &length)
		}
		if line == "\r\n" {
			break
		}
	}
	if length < 0 {
		return fmt.Errorf("answer without a Content-Length")
	}
	_, err := io.CopyN(io.Discard, k.r, int64(length))
	return err
}
