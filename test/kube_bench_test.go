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
// the destination controller costs on the data path: two client pods on one
// bed reach the same meshed server pod, one through its Service's ClusterIP
// (resolved by the controller, balanced over the Service's one endpoint),
// the other at its pod IP through a static destination table. Each
// iteration does one of each, alternately, so that both see the same
// machine; the reported ratios are service / static:
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
	viaService := bed.pod(b, kubePod{namespace: ns, name: "via-service"})
	static := bed.pod(b, kubePod{namespace: ns, name: "static", noController: true,
		destinations: []podDest{{Match: server.ip.String(), ID: serverID}}, runArgs: []string{"--opaque-ports=9000"}})

	echo := func(p *pod, to netip.Addr) time.Duration {
		start := time.Now()
		got, err := p.echo(b, to, 9000)
		if err != nil || !strings.HasSuffix(got, "hello") {
			b.Fatalf("echo from %s: %q, %v", p.name, got, err)
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
		_, err := viaService.echo(b, vip, 9000)
		return err == nil
	})
	svcHTTP, staticHTTP := newKeepAlive(b, viaService, vip, 8080), newKeepAlive(b, static, server.ip, 8080)
	for range 20 { // warm: TLS sessions, pools
		echo(viaService, vip)
		echo(static, server.ip)
		get(svcHTTP)
		get(staticHTTP)
	}

	var svcConn, staticConn, svcReq, staticReq time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		// Alternate which goes first, so neither always follows the other.
		if i%2 == 0 {
			svcConn += echo(viaService, vip)
			staticConn += echo(static, server.ip)
			svcReq += get(svcHTTP)
			staticReq += get(staticHTTP)
		} else {
			staticConn += echo(static, server.ip)
			svcConn += echo(viaService, vip)
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
