package controller_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/destination"
	"github.com/seed722d2a70/meshproxy/destination/controller"
	pb "github.com/seed722d2a70/meshproxy/destination/destinationpb"
	"github.com/seed722d2a70/meshproxy/identity"
	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/ports"
	"github.com/seed722d2a70/meshproxy/test/kubetest"
	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

const trustDomain = "mesh.test"

// env is one controller on a real control plane, with a client proxies'
// identity.
type env struct {
	cluster *kubetest.Cluster
	ca      *identity.CA
	addr    string
	client  *destination.Client
}

// newEnv starts a controller on cluster, serving on a free loopback port,
// and a client with a proxy's SVID of the same trust domain.
func newEnv(t *testing.T, cluster *kubetest.Cluster) *env {
	t.Helper()
	ca, err := identity.NewCA(spiffeid.RequireTrustDomainFromString(trustDomain))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{cluster: cluster, ca: ca}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	e.serve(t, ln)
	e.client = e.newClient(t, ca, "spiffe://"+trustDomain+"/ns/default/sa/client")
	return e
}

// serve runs a controller on ln until t ends or the returned stop is
// called; reg holds its metrics.
func (e *env) serve(t *testing.T, ln net.Listener) (stop func(), reg *prometheus.Registry) {
	t.Helper()
	src := devSource(t, e.ca, "spiffe://"+trustDomain+"/ns/meshproxy/sa/destination")
	meta, err := metadata.NewForConfig(e.cluster.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	reg = prometheus.NewRegistry()
	m, err := controller.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := controller.New(controller.Config{
		Client: e.cluster.Client, Metadata: meta, TrustDomain: trustDomain,
		DefaultOpaque: ports.MustParse(config.DefaultOpaquePorts), Metrics: m, Log: zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := controller.NewGRPCServer(c, src)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 2)
	go func() { ran <- c.Run(ctx) }()
	go func() { ran <- srv.Serve(ln) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		srv.GracefulStop()
		for range 2 {
			if err := <-ran; err != nil && err != grpc.ErrServerStopped {
				t.Errorf("controller: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	return stop, reg
}

func devSource(t *testing.T, ca *identity.CA, id string) identity.Source {
	t.Helper()
	src, err := identity.NewDevSource(ca, spiffeid.RequireFromString(id), time.Hour, zaptest.NewLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	return src
}

func (e *env) newClient(t *testing.T, ca *identity.CA, id string) *destination.Client {
	t.Helper()
	src := devSource(t, ca, id)
	cfg := identity.ClientConfig(src, tlsconfig.AuthorizeMemberOf(ca.TrustDomain()), identity.WithNextProtos("h2"))
	c, err := destination.NewClient(e.addr, cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// watch follows address until t ends.
func (e *env) watch(t *testing.T, address string) *destination.Watch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := e.client.Watch(ctx, address)
	t.Cleanup(func() { cancel(); <-w.Done() })
	return w
}

// waitFor waits until w's state satisfies cond, and returns it.
func waitFor(t *testing.T, w *destination.Watch, within time.Duration, what string, cond func(destination.State) bool) destination.State {
	t.Helper()
	deadline := time.After(within)
	for {
		changed := w.Changed()
		if s, ok := w.State(); ok && cond(s) {
			return s
		}
		select {
		case <-changed:
		case <-deadline:
			s, _ := w.State()
			t.Fatalf("after %v, still not %s; state: %s", within, what, describe(s))
		}
	}
}

// describe prints a state compactly, endpoints sorted.
func describe(s destination.State) string {
	var eps []string
	for _, ep := range s.Endpoints {
		eps = append(eps, fmt.Sprintf("%s(meshed=%v id=%s in=%d opaque=%v pod=%s/%s)", ep.Address, ep.Meshed, ep.Identity, ep.InboundPort, ep.Opaque, ep.Namespace, ep.Pod))
	}
	sort.Strings(eps)
	return fmt.Sprintf("kind=%v service=%v endpoints=[%s]", s.Kind, s.Service, strings.Join(eps, " "))
}

// addresses returns the endpoint addresses of s, sorted.
func addresses(s destination.State) []string {
	var out []string
	for a := range s.Endpoints {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

func hasAddresses(want ...string) func(destination.State) bool {
	want = slices.Sorted(slices.Values(want))
	return func(s destination.State) bool {
		return s.Kind == pb.Kind_KIND_SERVICE && strings.Join(addresses(s), ",") == strings.Join(want, ",")
	}
}

// meshedPod adds a pod injected with a proxy whose inbound port is inbound,
// and app ports.
func meshedPod(t *testing.T, c *kubetest.Cluster, ns, name, sa string, labels, annotations map[string]string, ready bool, inbound int32, appPorts ...corev1.ContainerPort) *kubetest.Pod {
	t.Helper()
	a := map[string]string{inject.AnnotationInjected: "meshproxy:test"}
	for k, v := range annotations {
		a[k] = v
	}
	return c.AddPod(t, kubetest.PodSpec{
		Namespace: ns, Name: name, Labels: labels, Annotations: a, ServiceAccount: sa, Ready: ready,
		Containers: []corev1.Container{
			{Name: "app", Ports: appPorts},
			{Name: inject.ProxyContainerName, Ports: []corev1.ContainerPort{{Name: inject.PortNameInbound, ContainerPort: inbound}}},
		},
	})
}

func plainPod(t *testing.T, c *kubetest.Cluster, ns, name string, labels map[string]string, ready bool, appPorts ...corev1.ContainerPort) *kubetest.Pod {
	t.Helper()
	return c.AddPod(t, kubetest.PodSpec{Namespace: ns, Name: name, Labels: labels, Ready: ready,
		Containers: []corev1.Container{{Name: "app", Ports: appPorts}}})
}

func createService(t *testing.T, c *kubetest.Cluster, svc *corev1.Service) *corev1.Service {
	t.Helper()
	c.EnsureNamespace(t, svc.Namespace, nil)
	out, err := c.Client.CoreV1().Services(svc.Namespace).Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating service %s/%s: %v", svc.Namespace, svc.Name, err)
	}
	return out
}

func service(ns, name string, annotations map[string]string, selector map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
		Spec:       corev1.ServiceSpec{Selector: selector, Ports: ports},
	}
}

func svcAddr(svc *corev1.Service, port int32) string {
	return net.JoinHostPort(svc.Spec.ClusterIP, fmt.Sprint(port))
}

func hostPort(ip fmt.Stringer, port int) string {
	return net.JoinHostPort(ip.String(), fmt.Sprint(port))
}

// within is how long the API server, the endpointslice controller and the
// destination controller together may take to reflect a change here.
const within = 10 * time.Second

func TestController(t *testing.T) {
	cluster := kubetest.Start(t, kubetest.Options{ControllerManager: true})
	e := newEnv(t, cluster)

	t.Run("numeric targetPort, meshed endpoints with their identity", func(t *testing.T) {
		t.Parallel()
		ns, app := "numeric", map[string]string{"app": "redis"}
		p1 := meshedPod(t, cluster, ns, "redis-0", "redis", app, nil, true, 4143, corev1.ContainerPort{ContainerPort: 6379})
		p2 := meshedPod(t, cluster, ns, "redis-1", "redis", app, nil, true, 4200, corev1.ContainerPort{ContainerPort: 6379})
		svc := createService(t, cluster, service(ns, "redis", nil, app, corev1.ServicePort{Port: 6380, TargetPort: intstr.FromInt32(6379)}))
		s := waitFor(t, e.watch(t, svcAddr(svc, 6380)), within, "both pods at 6379",
			hasAddresses(hostPort(p1.IP, 6379), hostPort(p2.IP, 6379)))
		if s.Service.GetName() != "redis" || s.Service.GetNamespace() != ns || s.Service.GetPort() != 6380 || !s.Service.GetOpaque() {
			t.Errorf("profile %v: want redis.%s port 6380, opaque through targetPort 6379", s.Service, ns)
		}
		for pod, in := range map[*kubetest.Pod]uint32{p1: 4143, p2: 4200} {
			ep := s.Endpoints[hostPort(pod.IP, 6379)]
			wantID := "spiffe://" + trustDomain + "/ns/" + ns + "/sa/redis"
			if !ep.Meshed || ep.Identity != wantID || ep.InboundPort != in || ep.Pod != pod.Name || ep.Namespace != ns || !ep.Opaque {
				t.Errorf("endpoint %s: %v; want meshed, %s, inbound %d, pod %s, opaque", ep.Address, ep, wantID, in, pod.Name)
			}
		}
		// The Service's name resolves the same.
		waitFor(t, e.watch(t, "redis."+ns+".svc.cluster.local:6380"), within, "both pods by name",
			hasAddresses(hostPort(p1.IP, 6379), hostPort(p2.IP, 6379)))
	})

	t.Run("named targetPort and an unmeshed endpoint", func(t *testing.T) {
		t.Parallel()
		ns, app := "named", map[string]string{"app": "web"}
		http := corev1.ContainerPort{Name: "http", ContainerPort: 8080}
		p1 := meshedPod(t, cluster, ns, "web-0", "", app, nil, true, 4143, http)
		p2 := plainPod(t, cluster, ns, "web-1", app, true, http)
		svc := createService(t, cluster, service(ns, "web", nil, app, corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("http")}))
		s := waitFor(t, e.watch(t, svcAddr(svc, 80)), within, "both pods at 8080",
			hasAddresses(hostPort(p1.IP, 8080), hostPort(p2.IP, 8080)))
		if s.Service.GetOpaque() {
			t.Errorf("port 80 → 8080 is not opaque by default: %v", s.Service)
		}
		if ep := s.Endpoints[hostPort(p1.IP, 8080)]; !ep.Meshed || ep.Identity != "spiffe://"+trustDomain+"/ns/"+ns+"/sa/default" {
			t.Errorf("meshed pod's endpoint: %v", ep)
		}
		if ep := s.Endpoints[hostPort(p2.IP, 8080)]; ep.Meshed || ep.Identity != "" || ep.InboundPort != 0 {
			t.Errorf("unmeshed pod's endpoint: %v", ep)
		}
	})

	t.Run("multi-port Service resolves each port to its own targetPort", func(t *testing.T) {
		t.Parallel()
		ns, app := "multiport", map[string]string{"app": "db"}
		p := meshedPod(t, cluster, ns, "db-0", "db", app, nil, true, 4143,
			corev1.ContainerPort{Name: "sql", ContainerPort: 5432}, corev1.ContainerPort{Name: "metrics", ContainerPort: 9187})
		svc := createService(t, cluster, service(ns, "db", nil, app,
			corev1.ServicePort{Name: "sql", Port: 15432, TargetPort: intstr.FromString("sql")},
			corev1.ServicePort{Name: "metrics", Port: 80, TargetPort: intstr.FromInt32(9187)}))
		sql := waitFor(t, e.watch(t, svcAddr(svc, 15432)), within, "sql at 5432", hasAddresses(hostPort(p.IP, 5432)))
		metrics := waitFor(t, e.watch(t, svcAddr(svc, 80)), within, "metrics at 9187", hasAddresses(hostPort(p.IP, 9187)))
		if !sql.Service.GetOpaque() || metrics.Service.GetOpaque() {
			t.Errorf("sql (→5432) should be opaque by the default list, metrics (→9187) not: %v / %v", sql.Service, metrics.Service)
		}
		// A port the Service does not declare: nothing answers there.
		waitFor(t, e.watch(t, svcAddr(svc, 4143)), within, "unknown", func(s destination.State) bool { return s.Kind == pb.Kind_KIND_UNKNOWN })
	})

	t.Run("scale 3 → 1 → 3 by readiness", func(t *testing.T) {
		t.Parallel()
		ns, app := "scale", map[string]string{"app": "api"}
		var pods []*kubetest.Pod
		var all []string
		for i := range 3 {
			p := meshedPod(t, cluster, ns, fmt.Sprintf("api-%d", i), "api", app, nil, true, 4143, corev1.ContainerPort{Name: "http", ContainerPort: 8080})
			pods = append(pods, p)
			all = append(all, hostPort(p.IP, 8080))
		}
		svc := createService(t, cluster, service(ns, "api", nil, app, corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("http")}))
		w := e.watch(t, svcAddr(svc, 80))
		waitFor(t, w, within, "3 endpoints", hasAddresses(all...))
		slices := watchSlices(t, cluster, ns, "api")
		for _, ready := range []bool{false, true} {
			for _, p := range pods[1:] {
				cluster.SetReady(t, ns, p.Name, ready)
			}
			want := all
			if !ready {
				want = all[:1]
			}
			// The subscriber must see the change within 1 s of the slice
			// showing it.
			changedAt := slices.waitReady(t, len(want))
			waitFor(t, w, within, fmt.Sprintf("%d endpoints", len(want)), hasAddresses(want...))
			if d := time.Since(changedAt); d > time.Second {
				t.Errorf("subscriber saw %d endpoints %v after the slice did; want within 1 s", len(want), d)
			}
		}
	})

	t.Run("Service deleted and recreated", func(t *testing.T) {
		t.Parallel()
		ns, app := "recreate", map[string]string{"app": "cache"}
		p := meshedPod(t, cluster, ns, "cache-0", "", app, nil, true, 4143, corev1.ContainerPort{ContainerPort: 11211})
		spec := service(ns, "cache", nil, app, corev1.ServicePort{Port: 11211})
		svc := createService(t, cluster, spec)
		w := e.watch(t, svcAddr(svc, 11211))
		waitFor(t, w, within, "one endpoint", hasAddresses(hostPort(p.IP, 11211)))
		if err := cluster.Client.CoreV1().Services(ns).Delete(context.Background(), "cache", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, w, within, "unknown after the delete", func(s destination.State) bool {
			return s.Kind == pb.Kind_KIND_UNKNOWN && len(s.Endpoints) == 0
		})
		spec.Spec.ClusterIP = svc.Spec.ClusterIP // the same address again
		createService(t, cluster, spec)
		waitFor(t, w, within, "the endpoint after the re-creation", hasAddresses(hostPort(p.IP, 11211)))
	})

	t.Run("no endpoints is not unknown", func(t *testing.T) {
		t.Parallel()
		svc := createService(t, cluster, service("empty", "nobody", nil, map[string]string{"app": "none"}, corev1.ServicePort{Port: 80}))
		s := waitFor(t, e.watch(t, svcAddr(svc, 80)), within, "a Service", func(s destination.State) bool { return s.Kind == pb.Kind_KIND_SERVICE })
		if len(s.Endpoints) != 0 || s.Service.GetName() != "nobody" {
			t.Errorf("want the Service with no endpoints: %s", describe(s))
		}
		waitFor(t, e.watch(t, "10.255.255.254:80"), within, "unknown", func(s destination.State) bool { return s.Kind == pb.Kind_KIND_UNKNOWN })
		waitFor(t, e.watch(t, "nothing.empty.svc.cluster.local:80"), within, "unknown", func(s destination.State) bool { return s.Kind == pb.Kind_KIND_UNKNOWN })
	})

	t.Run("pod IP and headless Service", func(t *testing.T) {
		t.Parallel()
		ns, app := "headless", map[string]string{"app": "nats"}
		p0 := meshedPod(t, cluster, ns, "nats-0", "nats", app, nil, true, 4143, corev1.ContainerPort{Name: "client", ContainerPort: 4222})
		p1 := meshedPod(t, cluster, ns, "nats-1", "nats", app, nil, true, 4143, corev1.ContainerPort{Name: "client", ContainerPort: 4222})
		spec := service(ns, "nats", map[string]string{inject.AnnotationOpaquePorts: "4222"}, app, corev1.ServicePort{Name: "client", Port: 4222, TargetPort: intstr.FromString("client")})
		spec.Spec.ClusterIP = corev1.ClusterIPNone
		createService(t, cluster, spec)
		s := waitFor(t, e.watch(t, hostPort(p0.IP, 4222)), within, "the pod with its headless Service", func(s destination.State) bool {
			return s.Kind == pb.Kind_KIND_POD && s.Service != nil
		})
		ep := s.Endpoints[hostPort(p0.IP, 4222)]
		if len(s.Endpoints) != 1 || !ep.Meshed || ep.Pod != "nats-0" || !ep.Opaque || !s.Service.Headless || !s.Service.Opaque {
			t.Errorf("pod IP of a headless Service: %s", describe(s))
		}
		waitFor(t, e.watch(t, "nats."+ns+".svc:4222"), within, "both pods by name", hasAddresses(hostPort(p0.IP, 4222), hostPort(p1.IP, 4222)))
		// A pod IP on a port no Service names: the pod alone.
		s = waitFor(t, e.watch(t, hostPort(p1.IP, 8222)), within, "the pod", func(s destination.State) bool { return s.Kind == pb.Kind_KIND_POD })
		if ep := s.Endpoints[hostPort(p1.IP, 8222)]; s.Service != nil || ep == nil || !ep.Meshed || ep.Opaque {
			t.Errorf("pod IP on another port: %s", describe(s))
		}
	})

	t.Run("opaque hints", func(t *testing.T) {
		t.Parallel()
		const ns = "opaque"
		// From the Service's annotation only: the pod says nothing.
		natsApp := map[string]string{"app": "nats"}
		nats := meshedPod(t, cluster, ns, "nats-0", "", natsApp, nil, true, 4143, corev1.ContainerPort{ContainerPort: 4222})
		svc := createService(t, cluster, service(ns, "nats", map[string]string{inject.AnnotationOpaquePorts: "4222"}, natsApp, corev1.ServicePort{Port: 4222}))
		s := waitFor(t, e.watch(t, svcAddr(svc, 4222)), within, "nats", hasAddresses(hostPort(nats.IP, 4222)))
		if !s.Service.Opaque || !s.Endpoints[hostPort(nats.IP, 4222)].Opaque {
			t.Errorf("Service annotation: %s", describe(s))
		}
		// From the pod's annotation only: the endpoint's word wins.
		smtpApp := map[string]string{"app": "mail"}
		mail := meshedPod(t, cluster, ns, "mail-0", "", smtpApp, map[string]string{inject.AnnotationOpaquePorts: "2525"}, true, 4143, corev1.ContainerPort{ContainerPort: 2525})
		svc = createService(t, cluster, service(ns, "mail", nil, smtpApp, corev1.ServicePort{Port: 25, TargetPort: intstr.FromInt32(2525)}))
		s = waitFor(t, e.watch(t, svcAddr(svc, 25)), within, "mail", hasAddresses(hostPort(mail.IP, 2525)))
		if ep := s.Endpoints[hostPort(mail.IP, 2525)]; !ep.Opaque || len(ep.OpaquePorts) != 1 || ep.OpaquePorts[0].First != 2525 {
			t.Errorf("pod annotation: %s", describe(s))
		}
		// From the default list, through the targetPort: 9090 → 3306.
		dbApp := map[string]string{"app": "mysql"}
		db := meshedPod(t, cluster, ns, "mysql-0", "", dbApp, nil, true, 4143, corev1.ContainerPort{Name: "mysql", ContainerPort: 3306})
		svc = createService(t, cluster, service(ns, "mysql", nil, dbApp, corev1.ServicePort{Port: 9090, TargetPort: intstr.FromString("mysql")}))
		s = waitFor(t, e.watch(t, svcAddr(svc, 9090)), within, "mysql", hasAddresses(hostPort(db.IP, 3306)))
		if !s.Service.Opaque || !s.Endpoints[hostPort(db.IP, 3306)].Opaque {
			t.Errorf("default list through targetPort: %s", describe(s))
		}
		// A namespace annotation reaches the pods, live.
		cluster.EnsureNamespace(t, ns, map[string]string{inject.AnnotationOpaquePorts: "3306,4222"})
		w := e.watch(t, svcAddr(svc, 9090))
		waitFor(t, w, within, "mysql with the namespace's list", func(s destination.State) bool {
			ep := s.Endpoints[hostPort(db.IP, 3306)]
			return ep != nil && ep.Opaque && len(ep.OpaquePorts) == 2
		})
	})

	t.Run("an EndpointSlice before its Service", func(t *testing.T) {
		t.Parallel()
		const ns = "ordering"
		cluster.EnsureNamespace(t, ns, nil)
		p := meshedPod(t, cluster, ns, "manual-0", "", nil, nil, true, 4143)
		// No selector: the slice is ours, written first, as a slow watch
		// might deliver it. Its second endpoint names a pod not created
		// yet, and its third one a pod at another address.
		late := netip.MustParseAddr("10.1.250.2")
		port, name, ready := int32(7000), "", true
		ref := func(pod string) *corev1.ObjectReference {
			return &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod}
		}
		_, err := cluster.Client.DiscoveryV1().EndpointSlices(ns).Create(context.Background(), &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "manual-1", Labels: map[string]string{discoveryv1.LabelServiceName: "manual"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{p.IP.String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}, TargetRef: ref(p.Name)},
				{Addresses: []string{late.String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}, TargetRef: ref("manual-late")},
				{Addresses: []string{"10.1.250.9"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}, TargetRef: ref(p.Name)},
			},
			Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		w := e.watch(t, "manual."+ns+".svc:7000")
		waitFor(t, w, within, "unknown before the Service", func(s destination.State) bool { return s.Kind == pb.Kind_KIND_UNKNOWN })
		createService(t, cluster, service(ns, "manual", nil, nil, corev1.ServicePort{Port: 7000}))
		// The pod not seen yet is left out, not taken for unmeshed; the
		// address that is not its pod's is left out for good.
		s := waitFor(t, w, within, "the slice's endpoint", hasAddresses(hostPort(p.IP, 7000)))
		if !s.Endpoints[hostPort(p.IP, 7000)].Meshed {
			t.Errorf("endpoint: %s", describe(s))
		}
		cluster.AddPod(t, kubetest.PodSpec{Namespace: ns, Name: "manual-late", IP: late, Ready: true,
			Annotations: map[string]string{inject.AnnotationInjected: "meshproxy:test"},
			Containers:  []corev1.Container{{Name: inject.ProxyContainerName}}})
		s = waitFor(t, w, within, "the late pod's endpoint", hasAddresses(hostPort(p.IP, 7000), hostPort(late, 7000)))
		if !s.Endpoints[hostPort(late, 7000)].Meshed {
			t.Errorf("the late pod's endpoint: %s", describe(s))
		}
	})

	t.Run("a hostNetwork pod is an unmeshed endpoint at its node's address", func(t *testing.T) {
		t.Parallel()
		const ns = "hostnet"
		cluster.EnsureNamespace(t, ns, nil)
		nodeIP := "10.1.251.2"
		ctx := context.Background()
		pod, err := cluster.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "exporter-0", Annotations: map[string]string{inject.AnnotationInjected: "x"}},
			Spec: corev1.PodSpec{NodeName: cluster.NodeName, HostNetwork: true, Containers: []corev1.Container{
				{Name: "app", Image: "none"}, {Name: inject.ProxyContainerName, Image: "none"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: nodeIP, PodIPs: []corev1.PodIP{{IP: nodeIP}}}
		if _, err := cluster.Client.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		port, name, ready := int32(9100), "", true
		if _, err := cluster.Client.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "exporter-1", Labels: map[string]string{discoveryv1.LabelServiceName: "exporter"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{nodeIP}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "exporter-0"}}},
			Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		createService(t, cluster, service(ns, "exporter", nil, nil, corev1.ServicePort{Port: 9100}))
		s := waitFor(t, e.watch(t, "exporter."+ns+".svc:9100"), within, "the node's address", hasAddresses(nodeIP+":9100"))
		if ep := s.Endpoints[nodeIP+":9100"]; ep.Meshed || ep.Identity != "" {
			t.Errorf("a hostNetwork pod's endpoint: %s", describe(s))
		}
	})

	t.Run("opaque ports injection gave the proxy (a workload's annotation)", func(t *testing.T) {
		t.Parallel()
		ns, app := "workload", map[string]string{"app": "q"}
		p := cluster.AddPod(t, kubetest.PodSpec{Namespace: ns, Name: "q-0", Labels: app, Ready: true,
			Annotations: map[string]string{inject.AnnotationInjected: "meshproxy:test"},
			Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{ContainerPort: 5672}}},
				{Name: inject.ProxyContainerName, Env: []corev1.EnvVar{{Name: inject.EnvOpaquePorts, Value: "5672"}},
					Ports: []corev1.ContainerPort{{Name: inject.PortNameInbound, ContainerPort: 4143}}}}})
		svc := createService(t, cluster, service(ns, "q", nil, app, corev1.ServicePort{Port: 5672}))
		s := waitFor(t, e.watch(t, svcAddr(svc, 5672)), within, "the pod", hasAddresses(hostPort(p.IP, 5672)))
		if ep := s.Endpoints[hostPort(p.IP, 5672)]; !ep.Opaque || s.Service.Opaque {
			t.Errorf("5672 is opaque for the pod (its proxy's list), not by the Service: %s", describe(s))
		}
	})

	t.Run("subscribers keep their state through a restart, then get it whole again", func(t *testing.T) {
		t.Parallel()
		ns, app := "restart", map[string]string{"app": "kv"}
		p0 := meshedPod(t, cluster, ns, "kv-0", "", app, nil, true, 4143, corev1.ContainerPort{ContainerPort: 6379})
		p1 := meshedPod(t, cluster, ns, "kv-1", "", app, nil, true, 4143, corev1.ContainerPort{ContainerPort: 6379})
		svc := createService(t, cluster, service(ns, "kv", nil, app, corev1.ServicePort{Port: 6379}))
		// A controller of its own, to restart.
		r := &env{cluster: cluster, ca: e.ca}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		r.addr = ln.Addr().String()
		stop, _ := r.serve(t, ln)
		r.client = r.newClient(t, e.ca, "spiffe://"+trustDomain+"/ns/default/sa/client")
		both := hasAddresses(hostPort(p0.IP, 6379), hostPort(p1.IP, 6379))
		w := r.watch(t, svcAddr(svc, 6379))
		waitFor(t, w, within, "two endpoints", both)

		stop()
		// While the controller is away the world changes; the proxy keeps
		// serving what it knew.
		cluster.SetReady(t, ns, p1.Name, false)
		slices := watchSlices(t, cluster, ns, "kv")
		slices.waitReady(t, 1)
		if s, ok := w.State(); !ok || !both(s) {
			t.Fatalf("state lost during the outage: %s", describe(s))
		}

		ln, err = net.Listen("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		_, reg := r.serve(t, ln)
		waitFor(t, w, within, "the state after the restart", hasAddresses(hostPort(p0.IP, 6379)))
		// It came as a new stream's snapshot, not as a delta on the old one.
		if got := counter(t, reg, "destination_updates_total", "snapshot"); got != 1 {
			t.Errorf("snapshots sent after the restart = %v, want 1", got)
		}
	})

	t.Run("a caller without a valid SVID is refused", func(t *testing.T) {
		t.Parallel()
		foreign, err := identity.NewCA(spiffeid.RequireTrustDomainFromString(trustDomain))
		if err != nil {
			t.Fatal(err)
		}
		other, err := identity.NewCA(spiffeid.RequireTrustDomainFromString("other.test"))
		if err != nil {
			t.Fatal(err)
		}
		for name, cfg := range map[string]*tls.Config{
			// Same trust domain name, another CA: not in the bundle.
			"untrusted CA": clientTLS(t, foreign, "spiffe://"+trustDomain+"/ns/default/sa/client"),
			// Another trust domain, which the controller does not trust.
			"other trust domain": clientTLS(t, other, "spiffe://other.test/ns/default/sa/client"),
			// No certificate at all.
			"no certificate": {MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, NextProtos: []string{"h2"}}, //nolint:gosec // the server is not what is tested
		} {
			conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			stream, err := pb.NewDestinationClient(conn).Resolve(ctx, &pb.ResolveRequest{Address: "10.96.0.1:443"})
			if err == nil {
				_, err = stream.Recv()
			}
			cancel()
			_ = conn.Close()
			if status.Code(err) != codes.Unavailable {
				t.Errorf("%s: Resolve = %v, want refused at the handshake (Unavailable)", name, err)
			} else {
				t.Logf("%s: refused: %v", name, err)
			}
		}
	})
}

// counter returns the value of the counter name{type=typ} in reg.
func counter(t *testing.T, reg *prometheus.Registry, name, typ string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return meshtest.Sum(mfs, name, map[string]string{"type": typ})
}

// clientTLS is a client configuration presenting an SVID of ca.
func clientTLS(t *testing.T, ca *identity.CA, id string) *tls.Config {
	t.Helper()
	svid, err := ca.Issue(spiffeid.RequireFromString(id), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	chain := make([][]byte, len(svid.Certificates))
	for i, c := range svid.Certificates {
		chain[i] = c.Raw
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: chain, PrivateKey: svid.PrivateKey}},
		NextProtos:   []string{"h2"},
		// The controller's SVID is not what is tested here.
		InsecureSkipVerify: true, //nolint:gosec
	}
}

// sliceWatch follows a Service's EndpointSlices, to time changes from the
// moment the slice shows them.
type sliceWatch struct {
	events <-chan watch.Event
}

func watchSlices(t *testing.T, c *kubetest.Cluster, ns, service string) *sliceWatch {
	t.Helper()
	w, err := c.Client.DiscoveryV1().EndpointSlices(ns).Watch(context.Background(),
		metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return &sliceWatch{events: w.ResultChan()}
}

// waitReady returns when a slice event shows n ready endpoints.
func (s *sliceWatch) waitReady(t *testing.T, n int) time.Time {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case ev := <-s.events:
			slice, ok := ev.Object.(*discoveryv1.EndpointSlice)
			if !ok {
				continue
			}
			got := 0
			for _, ep := range slice.Endpoints {
				if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
					got++
				}
			}
			if got == n {
				return time.Now()
			}
		case <-deadline:
			t.Fatalf("no EndpointSlice with %d ready endpoints within %v", n, within)
		}
	}
}
