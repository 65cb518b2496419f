package controller_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/seed722d2a70/meshproxy/bench"
	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/test/kubetest"
	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// The scale benchmark's world: a control plane holding Services,
// injected-looking pods and the Services' EndpointSlices, all written here
// (no EndpointSlice controller: slices written directly are deterministic,
// and far quicker than 10 000 pod status writes), and the controller as a
// process whose memory and CPU time /proc shows.

// scaleConfig sizes a run.
type scaleConfig struct {
	namespaces     int
	services       int // spread evenly over the namespaces
	podsPerService int // the endpoints of each Service, in one slice
	subscribers    int // clients, subscriber i watching Service i % services
	spreadChanges  int // slice changes to random Services
	hotChanges     int // slice changes to the one Service every client watches
}

// fullScale is the issue's: 10 000 endpoints across 1 000 Services, 2 000
// subscribed proxies.
var fullScale = scaleConfig{namespaces: 10, services: 1000, podsPerService: 10, subscribers: 2000, spreadChanges: 200, hotChanges: 50}

// scaleFromEnv is fullScale, or smaller for a quick try:
// MESHPROXY_SCALE_SERVICES and MESHPROXY_SCALE_SUBSCRIBERS override those
// two numbers.
func scaleFromEnv(tb testing.TB) scaleConfig {
	sc := fullScale
	for name, v := range map[string]*int{"MESHPROXY_SCALE_SERVICES": &sc.services, "MESHPROXY_SCALE_SUBSCRIBERS": &sc.subscribers} {
		s := os.Getenv(name)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			tb.Fatalf("%s=%q: want a positive number", name, s)
		}
		*v = n
	}
	sc.namespaces = min(sc.namespaces, sc.services)
	if sc.services*sc.podsPerService >= 1<<16-2 {
		tb.Fatalf("%d endpoints do not fit the endpoint range 10.1.0.0/16", sc.services*sc.podsPerService)
	}
	return sc
}

// createWorkers is how many API calls population keeps in flight.
const createWorkers = 16

// world is what the control plane holds.
type world struct {
	cluster  *kubetest.Cluster
	sc       scaleConfig
	services []*corev1.Service            // as created, ClusterIPs assigned
	slices   []*discoveryv1.EndpointSlice // slices[i] is services[i]'s, as last written
}

func serviceName(i int) string { return fmt.Sprintf("svc-%04d", i) }
func (w *world) namespace(i int) string {
	return fmt.Sprintf("scale-%d", i%w.sc.namespaces)
}

// populate creates the namespaces, then the Services, the pods and the
// slices, each kind createWorkers at a time, logging how long each took.
func populate(b *testing.B, cluster *kubetest.Cluster, sc scaleConfig) *world {
	b.Helper()
	w := &world{cluster: cluster, sc: sc, services: make([]*corev1.Service, sc.services), slices: make([]*discoveryv1.EndpointSlice, sc.services)}
	for i := range sc.namespaces {
		cluster.EnsureNamespace(b, w.namespace(i), nil)
	}
	ctx := context.Background()
	steps := []struct {
		what string
		n    int
		do   func(i int) error
	}{
		{"Services", sc.services, func(i int) error {
			svc, err := cluster.Client.CoreV1().Services(w.namespace(i)).Create(ctx, w.service(i), metav1.CreateOptions{})
			w.services[i] = svc
			return err
		}},
		{"pods", sc.services * sc.podsPerService, func(n int) error {
			i, j := n/sc.podsPerService, n%sc.podsPerService
			pod, err := cluster.Client.CoreV1().Pods(w.namespace(i)).Create(ctx, w.pod(i, j), metav1.CreateOptions{})
			if err != nil {
				return err
			}
			// The controller takes a pod's endpoint only at the pod's own
			// IP, as the kubelet would have written it.
			ip := endpointIP(n)
			pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
			_, err = cluster.Client.CoreV1().Pods(w.namespace(i)).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
			return err
		}},
		{"EndpointSlices", sc.services, func(i int) error {
			s, err := cluster.Client.DiscoveryV1().EndpointSlices(w.namespace(i)).Create(ctx, w.slice(i), metav1.CreateOptions{})
			w.slices[i] = s
			return err
		}},
	}
	for _, step := range steps {
		start := time.Now()
		if err := parallel(step.n, createWorkers, step.do); err != nil {
			b.Fatalf("creating %s: %v", step.what, err)
		}
		d := time.Since(start)
		b.Logf("created %d %s in %s (%.0f/s)", step.n, step.what, d.Round(time.Millisecond), float64(step.n)/d.Seconds())
	}
	return w
}

// service i is selector-less, so that its slice is ours alone.
func (w *world) service(i int) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.namespace(i), Name: serviceName(i)},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
}

// pod j of Service i looks injected: the annotation, and a proxy container
// with its inbound port.
func (w *world) pod(i, j int) *corev1.Pod {
	noToken := false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: w.namespace(i), Name: fmt.Sprintf("%s-%d", serviceName(i), j),
			Labels:      map[string]string{"app": serviceName(i)},
			Annotations: map[string]string{inject.AnnotationInjected: "meshproxy:bench"},
		},
		Spec: corev1.PodSpec{
			NodeName:                     w.cluster.NodeName,
			ServiceAccountName:           serviceName(i),
			AutomountServiceAccountToken: &noToken,
			Containers: []corev1.Container{
				{Name: "app", Image: "none", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}},
				{Name: inject.ProxyContainerName, Image: "none", Ports: []corev1.ContainerPort{{Name: inject.PortNameInbound, ContainerPort: 4143}}},
			},
		},
	}
}

// slice i publishes Service i's pods, all ready, at 8080.
func (w *world) slice(i int) *discoveryv1.EndpointSlice {
	port, name, proto := int32(8080), "", corev1.ProtocolTCP
	eps := make([]discoveryv1.Endpoint, w.sc.podsPerService)
	for j := range eps {
		ready := true
		eps[j] = discoveryv1.Endpoint{
			Addresses:  []string{endpointIP(i*w.sc.podsPerService + j)},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: w.namespace(i), Name: fmt.Sprintf("%s-%d", serviceName(i), j)},
		}
	}
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: w.namespace(i), Name: serviceName(i), Labels: map[string]string{discoveryv1.LabelServiceName: serviceName(i)}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
}

// endpointIP is the n-th address of 10.1.0.0/16 after the network's.
func endpointIP(n int) string {
	v := 0x0a010000 + uint32(n) + 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).String()
}

// flip toggles the readiness of endpoint j of Service i's slice, and
// returns how many of its endpoints are ready now.
func (w *world) flip(i, j int) (readyNow int, err error) {
	s := w.slices[i].DeepCopy()
	r := !isReady(s.Endpoints[j].Conditions)
	s.Endpoints[j].Conditions.Ready = &r
	s, err = w.cluster.Client.DiscoveryV1().EndpointSlices(s.Namespace).Update(context.Background(), s, metav1.UpdateOptions{})
	if err != nil {
		return 0, fmt.Errorf("updating slice %s/%s: %w", w.slices[i].Namespace, w.slices[i].Name, err)
	}
	w.slices[i] = s
	return w.readyCount(i), nil
}

// readyCount is how many endpoints Service i's slice has ready.
func (w *world) readyCount(i int) int {
	n := 0
	for _, ep := range w.slices[i].Endpoints {
		if isReady(ep.Conditions) {
			n++
		}
	}
	return n
}

func isReady(c discoveryv1.EndpointConditions) bool { return c.Ready == nil || *c.Ready }

// parallel calls f(0) … f(n-1) on workers goroutines, and returns the
// first error; after one, the rest are skipped.
func parallel(n, workers int, f func(i int) error) error {
	var next atomic.Int64
	var failed atomic.Bool
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n && !failed.Load(); i = int(next.Add(1) - 1) {
				if err := f(i); err != nil {
					failed.Store(true)
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// scaleController is the controller under test, as a process.
type scaleController struct {
	*meshtest.Process
	http *http.Client // to its admin server; closed when the run ends
}

// startScaleController runs `meshproxy destination` as startController
// does (which wants a *testing.T), with an admin client of its own whose
// connections are closed at the end, for goleak, and waits until it is
// ready: its informers hold the cluster.
func startScaleController(b *testing.B, args ...string) *scaleController {
	b.Helper()
	bin, err := buildOnce()
	if err != nil {
		b.Fatal(err)
	}
	tr := &http.Transport{}
	b.Cleanup(tr.CloseIdleConnections)
	c := &scaleController{http: &http.Client{Transport: tr}}
	c.Process = meshtest.StartProcessWith(b, bin, meshtest.ProcessOptions{Command: "destination", HTTPClient: c.http},
		append([]string{"-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0"}, args...)...)
	deadline := time.Now().Add(2 * time.Minute)
	for !c.Ready() {
		if time.Now().After(deadline) {
			b.Fatalf("controller not ready after 2 minutes:\n%s", c.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c
}

// get fetches path from the admin server.
func (c *scaleController) get(path string) (int, []byte, error) {
	resp, err := c.http.Get("http://" + c.Admin + path)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// procStats reads the controller process's /proc entries and metrics.
type procStats struct {
	b    *testing.B
	ctrl *scaleController
}

// procSample is the controller at one moment.
type procSample struct {
	rssMiB, heapMiB, goroutines, streams float64
	cpu                                  time.Duration
}

func (p procStats) cpu() time.Duration {
	s, err := bench.ProcessCPU(p.ctrl.Cmd.Process.Pid)
	if err != nil {
		p.b.Fatal(err)
	}
	return time.Duration(s * float64(time.Second))
}

func (p procStats) sample() procSample {
	rss, err := bench.ProcessRSS(p.ctrl.Cmd.Process.Pid)
	if err != nil {
		p.b.Fatal(err)
	}
	s := procSample{rssMiB: rss / (1 << 20), cpu: p.cpu()}
	metrics := p.ctrl.Scrape(p.b)
	s.goroutines = meshtest.Sum(metrics, "go_goroutines", nil)
	s.streams = meshtest.Sum(metrics, "destination_subscribers", nil)
	s.heapMiB = meshtest.Sum(metrics, "go_memstats_heap_inuse_bytes", nil) / (1 << 20)
	p.b.Logf("controller: RSS %.1f MiB, heap in use %.1f MiB, %.0f goroutines, %.0f streams, CPU %s so far", s.rssMiB, s.heapMiB, s.goroutines, s.streams, s.cpu.Round(10*time.Millisecond))
	return s
}

// profiler writes the controller's profiles into the directory
// MESHPROXY_SCALE_PROFILE names; without it, it does nothing.
type profiler struct {
	b    *testing.B
	ctrl *scaleController
	dir  string
}

func newProfiler(b *testing.B, ctrl *scaleController) profiler {
	return profiler{b: b, ctrl: ctrl, dir: os.Getenv("MESHPROXY_SCALE_PROFILE")}
}

// heap writes a heap profile, after a GC, to file.
func (p profiler) heap(file string) {
	if p.dir != "" {
		p.write(file, "/debug/pprof/heap?gc=1")
	}
}

// startCPU starts a CPU profile of MESHPROXY_SCALE_PROFILE_SECONDS
// (default 30) to file; the returned function waits for it.
func (p profiler) startCPU(file string) (wait func()) {
	if p.dir == "" {
		return func() {}
	}
	seconds := 30
	if v, err := strconv.Atoi(os.Getenv("MESHPROXY_SCALE_PROFILE_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.write(file, fmt.Sprintf("/debug/pprof/profile?seconds=%d", seconds))
	}()
	return func() { <-done }
}

// write saves the admin server's answer at path to file; a failure fails
// the run but does not stop it (it may be on another goroutine).
func (p profiler) write(file, path string) {
	code, body, err := p.ctrl.get(path)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("status %d: %s", code, body)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(p.dir, file), body, 0o644)
	}
	if err != nil {
		p.b.Errorf("profile %s: %v", path, err)
		return
	}
	p.b.Logf("controller profile %s written to %s", path, filepath.Join(p.dir, file))
}
