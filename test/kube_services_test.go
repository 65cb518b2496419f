package test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// service creates a Service and returns its ClusterIP.
func (b *kubeBed) service(t testing.TB, ns, name string, annotations, selector map[string]string, ports ...corev1.ServicePort) netip.Addr {
	t.Helper()
	b.cluster.EnsureNamespace(t, ns, nil)
	svc, err := b.cluster.Client.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
		Spec:       corev1.ServiceSpec{Selector: selector, Ports: ports},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating service %s/%s: %v", ns, name, err)
	}
	return netip.MustParseAddr(svc.Spec.ClusterIP)
}

// redisCLI runs redis-cli in the pod against addr with args, stdin as the
// last argument when given (-x), and returns its output.
func (p *pod) redisCLI(t testing.TB, addr netip.AddrPort, stdin []byte, args ...string) (string, error) {
	t.Helper()
	full := []string{"20", "redis-cli", "--raw", "-h", addr.Addr().String(), "-p", strconv.Itoa(int(addr.Port()))}
	if stdin != nil {
		full = append(full, "-x")
	}
	cmd := p.ns.Command("timeout", append(full, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return strings.TrimSuffix(string(out), "\n"), err
}

// keepAliveClient is an HTTP client in the pod that uses one connection.
func (p *pod) keepAliveClient(t testing.TB) *http.Client {
	tr := &http.Transport{DialContext: p.ns.DialContext, MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

// getBody fetches url with c and returns the body of a 200 answer.
func getBody(c *http.Client, url string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	return doBody(c, req)
}

// doBody sends req and returns the body of the answer, an error unless it
// is 200 OK.
func doBody(c *http.Client, req *http.Request) (string, error) {
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s: %s", resp.Status, body)
	}
	return string(body), err
}

// A Service's ClusterIP, port 6380 → targetPort "resp" (6379), in front of
// a meshed redis. Without a destination controller, a client whose proxy
// knows only the meshed networks cannot reach it; with one, the Service is
// resolved to the pod, and the opaque connection goes to the pod's 4143
// with 6379 in the header.
func TestKubeServiceRedisBeforeAndAfter(t *testing.T) {
	b := newKubeBed(t)
	const ns = "shop"
	app := map[string]string{"app": "redis"}
	server := b.pod(t, kubePod{namespace: ns, name: "redis-0", serviceAccount: "redis", labels: app,
		ports: []corev1.ContainerPort{{Name: "resp", ContainerPort: 6379}}})
	server.startRedis(t, b.dir)
	vip := netip.AddrPortFrom(b.service(t, ns, "redis", nil, app, corev1.ServicePort{Port: 6380, TargetPort: intstr.FromString("resp")}), 6380)

	// Before: today's model. The client's proxy takes the ClusterIP for a
	// meshed pod and dials VIP:4143, where kube-proxy has no rule (it
	// translates only the Service's declared ports): the connection fails,
	// closed.
	before := b.pod(t, kubePod{namespace: ns, name: "old-client", noController: true, runArgs: []string{"--meshed-networks=10.0.0.0/8"}})
	if out, err := before.redisCLI(t, vip, nil, "PING"); err == nil && out == "PONG" {
		t.Fatalf("PING through the ClusterIP with meshed networks only answered %q; the failure this test documents is gone", out)
	}
	meshtest.Eventually(t, "the old client's proxy to have failed toward VIP:4143", func() bool {
		return before.proxy.LogContains(`"dial_addr":"` + netip.AddrPortFrom(vip.Addr(), 4143).String() + `"`)
	})

	// After: the controller resolves the Service.
	client := b.pod(t, kubePod{namespace: ns, name: "client"})
	var out string
	meshtest.Eventually(t, "PING through the ClusterIP", func() bool {
		out, _ = client.redisCLI(t, vip, nil, "PING")
		return out == "PONG"
	})
	value := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	if out, err := client.redisCLI(t, vip, value, "SET", "big"); err != nil || out != "OK" {
		t.Fatalf("SET of 1 MiB: %q, %v", out, err)
	}
	got, err := client.redisCLI(t, vip, nil, "GET", "big")
	if err != nil || got != string(value) {
		t.Fatalf("GET returned %d bytes (%v), want the 1 MiB set", len(got), err)
	}
	// The server's proxy took the connections on 4143, and their headers
	// named 6379, which it forwarded to.
	on4143 := server.metric(t, "tcp_open_total", map[string]string{"direction": "inbound", "peer": "src",
		"target_addr": netip.AddrPortFrom(server.ip, 4143).String()})
	to6379 := server.metric(t, "tcp_open_total", map[string]string{"direction": "inbound", "peer": "dst", "target_addr": "127.0.0.1:6379"})
	if on4143 < 3 || to6379 < 3 {
		t.Errorf("server proxy: %v connections on 4143, %v to 127.0.0.1:6379; want the client's 3 at least", on4143, to6379)
	}
	if n := client.metric(t, "tcp_open_total", map[string]string{"direction": "outbound", "peer": "dst",
		"dst_service": "redis", "dst_namespace": ns, "dst_pod": "redis-0", "server_id": "spiffe://" + meshtest.TrustDomain + "/ns/" + ns + "/sa/redis"}); n < 3 {
		t.Errorf("client proxy: %v connections labelled with the Service, the pod and its identity, want 3 at least", n)
	}
	if n := client.metric(t, "outbound_destination_lookups_total", map[string]string{"result": "service"}); n < 3 {
		t.Errorf("client proxy resolved the Service %v times, want 3 at least", n)
	}
}

// HTTP to a Service (80 → 8080) with three replicas: the requests of one
// keep-alive client connection are spread over all three, and arrive on
// 8080 (the server pods' rules hand them to their proxies), not on 4143.
// A gRPC client's one connection is balanced per call too, which
// kube-proxy alone cannot do.
func TestKubeServiceBalancing(t *testing.T) {
	b := newKubeBed(t)
	const ns = "web"
	app := map[string]string{"app": "web"}
	var replicas []*pod
	for i := range 3 {
		p := b.pod(t, kubePod{namespace: ns, name: fmt.Sprintf("web-%d", i), serviceAccount: "web", labels: app,
			ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "grpc", ContainerPort: 50051}}})
		p.serveHTTP(t, 8080)
		p.serveGRPC(t, 50051)
		replicas = append(replicas, p)
	}
	vip := b.service(t, ns, "web", nil, app,
		corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
		corev1.ServicePort{Name: "grpc", Port: 9090, TargetPort: intstr.FromString("grpc")})
	client := b.pod(t, kubePod{namespace: ns, name: "client"})

	hc := client.keepAliveClient(t)
	url := "http://" + netip.AddrPortFrom(vip, 80).String() + "/"
	meshtest.Eventually(t, "all three replicas to answer", func() bool {
		seen := map[string]bool{}
		for range 30 {
			body, err := getBody(hc, url)
			if err != nil {
				return false
			}
			seen[strings.Fields(body)[0]] = true
		}
		return len(seen) == 3
	})
	srcBefore := client.metric(t, "tcp_open_total", map[string]string{"direction": "outbound", "peer": "src"})
	counts := map[string]int{}
	for range 300 {
		body, err := getBody(hc, url)
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(body) // "<pod> from <address>"
		if len(f) != 3 || f[2] != "127.0.0.1" {
			t.Fatalf("answer %q: want one delivered by the server pod's proxy", body)
		}
		counts[f[0]]++
	}
	for _, p := range replicas {
		if counts[p.name] < 60 {
			t.Errorf("replica %s got %d of 300 requests, want at least 20%%: %v", p.name, counts[p.name], counts)
		}
		if n := client.metric(t, "tcp_open_total", map[string]string{"direction": "outbound", "peer": "dst",
			"target_addr": netip.AddrPortFrom(p.ip, 8080).String()}); n == 0 {
			t.Errorf("no connection from the client's proxy to %s:8080", p.ip)
		}
		if n := client.metric(t, "tcp_open_total", map[string]string{"direction": "outbound", "peer": "dst",
			"target_addr": netip.AddrPortFrom(p.ip, 4143).String()}); n != 0 {
			t.Errorf("%v HTTP connections went to %s:4143; HTTP keeps its port", n, p.ip)
		}
	}
	if n := client.metric(t, "request_total", map[string]string{"direction": "outbound", "dst_service": "web", "dst_namespace": ns, "tls": "true"}); n < 300 {
		t.Errorf("request_total with dst_service=web: %v, want the 300 requests at least", n)
	}
	if n := client.metric(t, "tcp_open_total", map[string]string{"direction": "outbound", "peer": "src"}) - srcBefore; n != 0 {
		t.Errorf("the client opened %v new connections for the 300 requests, want none (keep-alive)", n)
	}

	// gRPC: one connection, calls balanced.
	conn, err := grpc.NewClient("passthrough:///"+netip.AddrPortFrom(vip, 9090).String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return client.ns.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	calls := map[string]int{}
	for range 150 {
		var md metadata.MD
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md))
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("gRPC call: %v, %v", resp, err)
		}
		calls[strings.Join(md.Get("pod"), "")]++
	}
	for _, p := range replicas {
		if calls[p.name] < 20 {
			t.Errorf("replica %s answered %d of 150 gRPC calls on one connection: %v", p.name, calls[p.name], calls)
		}
	}
}

// serveGRPC runs a gRPC health server on port in the pod that names the pod
// in each answer's "pod" header.
func (p *pod) serveGRPC(t testing.TB, port uint16) {
	t.Helper()
	ln, err := p.ns.Listen("tcp", ":"+strconv.Itoa(int(port)))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		_ = grpc.SetHeader(ctx, metadata.Pairs("pod", p.name))
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
}

// The seed's rule: opaqueness is declared on the destination. nats-server
// speaks first on 4222, which is not in the default list; its Service says
// 4222 is opaque, the client pod says nothing and speculation is off, and
// still the first greeting comes at once: the client's proxy skipped
// detection on the Service's word. An endpoint whose proxy presents
// another identity than its service account's is refused.
func TestKubeServiceDestinationHints(t *testing.T) {
	b := newKubeBed(t)
	const ns = "msg"
	app := map[string]string{"app": "nats"}
	server := b.pod(t, kubePod{namespace: ns, name: "nats-0", serviceAccount: "nats", labels: app,
		ports: []corev1.ContainerPort{{Name: "client", ContainerPort: 4222}}})
	server.startDaemon(t, exec.Command(lookBin(t, "nats-server"), "-a", "0.0.0.0", "-p", "4222"), 4222)
	vip := b.service(t, ns, "nats", map[string]string{inject.AnnotationOpaquePorts: "4222"}, app,
		corev1.ServicePort{Port: 4222, TargetPort: intstr.FromString("client")})
	client := b.pod(t, kubePod{namespace: ns, name: "client", runArgs: []string{"--detect-timeout=10s", "--detect-speculate-after=0"}})

	var greeting string
	var took time.Duration
	meshtest.Eventually(t, "a NATS greeting through the ClusterIP", func() bool {
		start := time.Now()
		c, err := client.dial(t, vip, 4222)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 256)
		n, _ := c.Read(buf)
		greeting, took = string(buf[:n]), time.Since(start)
		return strings.HasPrefix(greeting, "INFO ")
	})
	t.Logf("NATS greeting after %v", took)
	if n := client.metric(t, "protocol_detect_total", map[string]string{"direction": "outbound"}); n != 0 {
		t.Errorf("the client's proxy ran detection %v times on an opaque Service port", n)
	}
	if n := server.metric(t, "tcp_open_total", map[string]string{"direction": "inbound", "peer": "src",
		"target_addr": netip.AddrPortFrom(server.ip, 4143).String()}); n == 0 {
		t.Errorf("the opaque connection did not arrive on the server pod's 4143")
	}

	// An impostor: service account "api", but its proxy presents another ID.
	apiApp := map[string]string{"app": "api"}
	impostor := b.pod(t, kubePod{namespace: ns, name: "api-0", serviceAccount: "api", labels: apiApp,
		id: "spiffe://" + meshtest.TrustDomain + "/ns/" + ns + "/sa/other", ports: []corev1.ContainerPort{{ContainerPort: 8080}}})
	impostor.serveHTTP(t, 8080)
	apiVIP := b.service(t, ns, "api", nil, apiApp, corev1.ServicePort{Port: 80, TargetPort: intstr.FromInt32(8080)})
	meshtest.Eventually(t, "the impostor to be refused as unauthorized", func() bool {
		_, err := client.get(t, apiVIP, 80)
		return err != nil && client.metric(t, "outbound_connect_errors_total", map[string]string{"reason": "unauthorized"}) > 0
	})

	// An unmeshed endpoint: plain TCP to podIP:targetPort, or refused.
	plainApp := map[string]string{"app": "plain-redis"}
	plain := b.pod(t, kubePod{namespace: ns, name: "plain-redis-0", labels: plainApp, unmeshed: true,
		ports: []corev1.ContainerPort{{ContainerPort: 6379}}})
	plain.startRedis(t, b.dir)
	plainVIP := netip.AddrPortFrom(b.service(t, ns, "plain-redis", nil, plainApp, corev1.ServicePort{Port: 16379, TargetPort: intstr.FromInt32(6379)}), 16379)
	meshtest.Eventually(t, "PING to an unmeshed Service", func() bool {
		out, _ := client.redisCLI(t, plainVIP, nil, "PING")
		return out == "PONG"
	})
	if n := client.metric(t, "tcp_open_total", map[string]string{"direction": "outbound", "peer": "dst", "tls": "disabled",
		"target_addr": netip.AddrPortFrom(plain.ip, 6379).String(), "dst_service": "plain-redis"}); n == 0 {
		t.Errorf("no plain connection to the unmeshed endpoint %s:6379", plain.ip)
	}
	strict := b.pod(t, kubePod{namespace: ns, name: "strict-client", runArgs: []string{"--refuse-unmeshed"}})
	meshtest.Eventually(t, "the unmeshed endpoint to be refused", func() bool {
		out, _ := strict.redisCLI(t, plainVIP, nil, "PING")
		return out != "PONG" && strict.metric(t, "outbound_connect_errors_total", map[string]string{"reason": "unmeshed_refused"}) > 0
	})
}

// The controller stops mid-test: established connections and new ones to
// Services the proxy knows keep working on its last known state; once the
// controller is back, the proxy subscribes again.
func TestKubeServiceControllerOutage(t *testing.T) {
	b := newKubeBed(t)
	const ns = "outage"
	app := map[string]string{"app": "redis"}
	server := b.pod(t, kubePod{namespace: ns, name: "redis-0", labels: app, ports: []corev1.ContainerPort{{ContainerPort: 6379}}})
	server.startRedis(t, b.dir)
	vip := netip.AddrPortFrom(b.service(t, ns, "redis", nil, app, corev1.ServicePort{Port: 6379}), 6379)
	client := b.pod(t, kubePod{namespace: ns, name: "client"})
	meshtest.Eventually(t, "PING through the ClusterIP", func() bool {
		out, _ := client.redisCLI(t, vip, nil, "PING")
		return out == "PONG"
	})
	established, err := client.dial(t, vip.Addr(), vip.Port())
	if err != nil {
		t.Fatal(err)
	}
	defer established.Close()
	if r, err := redisDo(established, "PING"); err != nil || r != "PONG" {
		t.Fatalf("PING on the established connection: %q, %v", r, err)
	}

	if err := b.controller.Stop(t); err != nil {
		t.Fatal(err)
	}
	if !client.proxy.Ready() {
		t.Errorf("the client's proxy is not ready while the controller is down")
	}
	if r, err := redisDo(established, "PING"); err != nil || r != "PONG" {
		t.Errorf("PING on the established connection during the outage: %q, %v", r, err)
	}
	for range 3 {
		if out, err := client.redisCLI(t, vip, nil, "PING"); out != "PONG" {
			t.Errorf("a new connection during the outage: %q, %v", out, err)
		}
	}

	b.startController(t)
	meshtest.Eventually(t, "the client's proxy to subscribe again", func() bool {
		return b.controller.Metric(t, "destination_subscribers", nil) >= 1
	})
	if out, err := client.redisCLI(t, vip, nil, "PING"); out != "PONG" {
		t.Errorf("after the restart: %q, %v", out, err)
	}
}

// A replica marked not ready under a steady 100 requests a second gets no
// new request 2 s later, and no request fails: the controller's update
// reaches the client's balancer, and an endpoint that fails to connect (a
// pod whose app is gone, here one with nothing listening) is passed over
// for another within the same request.
func TestKubeServiceScaleDownUnderLoad(t *testing.T) {
	b := newKubeBed(t)
	const ns = "scale"
	app := map[string]string{"app": "web"}
	http8080 := []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	var replicas []*pod
	for i := range 3 {
		p := b.pod(t, kubePod{namespace: ns, name: fmt.Sprintf("web-%d", i), labels: app, ports: http8080})
		p.serveHTTP(t, 8080)
		replicas = append(replicas, p)
	}
	// Ready as far as the API knows, but nothing answers: connects fail.
	b.pod(t, kubePod{namespace: ns, name: "web-dead", labels: app, ports: http8080, unmeshed: true})
	vip := b.service(t, ns, "web", nil, app, corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("http")})
	client := b.pod(t, kubePod{namespace: ns, name: "client"})
	hc := client.keepAliveClient(t)
	url := "http://" + netip.AddrPortFrom(vip, 80).String() + "/"
	meshtest.Eventually(t, "the Service to answer", func() bool {
		_, err := getBody(hc, url)
		return err == nil
	})

	type result struct {
		sent    time.Time
		replica string
		err     error
	}
	var results []result
	const rate, total = 100, 700 // 7 s at 100/s
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	done := make(chan result, total)
	var marked time.Time
	for i := range total {
		<-tick.C
		if i == 200 {
			b.cluster.SetReady(t, ns, "web-2", false)
			marked = time.Now()
		}
		go func(sent time.Time) {
			body, err := getBody(hc, url)
			r := result{sent: sent, err: err}
			if f := strings.Fields(body); err == nil && len(f) > 0 {
				r.replica = f[0]
			}
			done <- r
		}(time.Now())
	}
	for range total {
		results = append(results, <-done)
	}
	perReplica := map[string]int{}
	for _, r := range results {
		if r.err != nil {
			t.Errorf("request sent %v after the mark failed: %v", r.sent.Sub(marked), r.err)
			continue
		}
		perReplica[r.replica]++
		if r.replica == "web-2" && r.sent.After(marked.Add(2*time.Second)) {
			t.Errorf("web-2 got a request sent %v after it was marked not ready", r.sent.Sub(marked))
		}
	}
	t.Logf("requests per replica: %v", perReplica)
	if n := client.metric(t, "outbound_endpoint_choices_total", map[string]string{"outcome": "failed"}); n == 0 {
		t.Errorf("no failed connect to the dead endpoint was counted; the test proves nothing about failing over")
	}
}

// With the controller, the seed's model holds for NetworkPolicies: a policy
// admitting only 8080 (HTTP) lets meshed HTTP through, since HTTP keeps its
// port; a policy admitting only 6379 (opaque) drops meshed Redis, which
// goes to 4143, until 4143 is admitted too. Real filter rules in the server
// pod, ahead of its interception rules, as a CNI's would be.
func TestKubeServiceNetworkPolicy(t *testing.T) {
	b := newKubeBed(t)
	const ns = "policy"
	app := map[string]string{"app": "backend"}
	server := b.pod(t, kubePod{namespace: ns, name: "backend-0", labels: app,
		ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "resp", ContainerPort: 6379}, {Name: "echo", ContainerPort: 9000}}})
	server.serveHTTP(t, 8080)
	server.startRedis(t, b.dir)
	server.serveEcho(t, 9000)
	vip := b.service(t, ns, "backend", nil, app,
		corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
		corev1.ServicePort{Name: "resp", Port: 6379, TargetPort: intstr.FromString("resp")},
		corev1.ServicePort{Name: "echo", Port: 9000, TargetPort: intstr.FromString("echo")})
	// A dropped SYN is only noticed when the dial times out: keep it short.
	client := b.pod(t, kubePod{namespace: ns, name: "client", runArgs: []string{"--dial-timeout=500ms"}})
	meshtest.Eventually(t, "the Service to answer", func() bool {
		_, err := client.get(t, vip, 80)
		return err == nil
	})

	admitOnly := func(ports string) {
		t.Helper()
		server.ns.MustRun(t, "iptables", "-t", "raw", "-F", "PREROUTING")
		server.ns.MustRun(t, "iptables", "-t", "raw", "-A", "PREROUTING", "-i", "eth0", "-p", "tcp", "--syn",
			"-m", "multiport", "!", "--dports", ports, "-j", "DROP")
	}
	redisPing := func() error {
		out, err := client.redisCLI(t, netip.AddrPortFrom(vip, 6379), nil, "PING")
		if err == nil && out != "PONG" {
			err = fmt.Errorf("answer %q", out)
		}
		return err
	}

	admitOnly("8080,4191")
	if body, err := client.get(t, vip, 80); err != nil || !strings.HasPrefix(body, "backend-0 from 127.0.0.1") {
		t.Errorf("policy admitting 8080: meshed HTTP: %q, %v", body, err)
	}
	// Not HTTP, and not declared opaque (detection finds it opaque): it
	// keeps its port too.
	admitOnly("9000,4191")
	if got, err := client.echo(t, vip, 9000); err != nil || got != "127.0.0.1 hello" {
		t.Errorf("policy admitting 9000: meshed TCP on a port not declared opaque: %q, %v", got, err)
	}
	admitOnly("6379,4191")
	if err := redisPing(); err == nil {
		t.Errorf("policy admitting 6379 only: meshed Redis got through, though it travels to 4143")
	}
	admitOnly("6379,4143,4191")
	if err := redisPing(); err != nil {
		t.Errorf("policy admitting 6379 and 4143: meshed Redis: %v", err)
	}
}
