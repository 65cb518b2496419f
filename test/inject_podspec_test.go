//go:build linux

package test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/internal/manifest"
	"github.com/seed722d2a70/meshproxy/test/meshtest"
	"github.com/seed722d2a70/meshproxy/test/spiretest"
)

// The pods of examples/kubernetes/app.yaml, injected with the Go API as the
// webhook injects them (the namespace opts in), run in the pod test bed the
// way the kubelet would run them: `meshproxy-init` with exactly its
// arguments, then the proxy sidecar with exactly its arguments and
// environment until its startup probe passes, then the apps. The web pod's
// Redis connection (6379, opaque by default) reaches the redis pod's
// inbound port 4143 over mTLS without detection, an HTTP app in the redis
// pod is reached over mTLS too, every connection into the redis pod arrives
// on 4143, both proxies name the other's SPIFFE ID (issued by a real SPIRE
// agent, read from the socket the spec names), and every probe of the
// injected spec answers from outside the pod, the app's own through its
// proxy. The proxies know their peers are meshed from the spec alone:
// MESHPROXY_MESHED_NETWORKS, injected with the default networks, which
// contain the test bed's pod LAN (10.77.0.0/24, as a cluster's pods would
// be in 10.0.0.0/8); no destination table is given.
//
// What the test bed changes, and why; nothing else of the spec is touched:
//   - The image: each pod runs its own copy of the meshproxy binary with the
//     containers' args as argv (the image's entrypoint is meshproxy). Two
//     copies let the SPIRE agent tell the pods apart by path, as the k8s
//     attestor would by service account; both run as the spec's UID.
//   - The harness adds `-log-format json` to `meshproxy run`: it learns the
//     proxy's addresses and readiness from its JSON log.
//   - Volumes: the csi.spiffe.io volume becomes a directory holding a link
//     to the test SPIRE agent's socket under the spec's file name; paths
//     under its mountPath in the environment (MESHPROXY_SPIFFE_SOCKET) are
//     rewritten to it, as the mount would make them resolve. The init
//     container's /run emptyDir is the host's /run, where iptables keeps
//     its lock anyway.
//   - The proxy runs with the spec's UID as its GID too (the spec sets no
//     runAsGroup), and the init container as full root rather than root
//     with only NET_ADMIN and NET_RAW.
//   - App images do not run: each app container is stood in for by a
//     process listening on its containerPort (redis-server for Redis, an
//     HTTP server otherwise), and the web app's REDIS_ADDR names the redis
//     pod's IP for want of cluster DNS.
func TestInjectedExamplePodsMeshRedisAndHTTPAndAnswerProbes(t *testing.T) {
	t.Parallel()
	bed := newTestBed(t)
	specs := injectExample(t, func(name string, spec *corev1.PodSpec) {
		if name == "redis" {
			// A metrics exporter beside Redis gives the pod an HTTP app.
			spec.Containers = append(spec.Containers, corev1.Container{
				Name: "redis-exporter", Image: "oliver006/redis_exporter:v1.67.0",
				Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9121}},
			})
		}
	})
	spire := spiretest.Start(t, spiretest.Options{TrustDomain: "mesh.local"})
	node := bed.unmeshedPod(t, "node") // where the kubelet's probes come from
	kubelet := &kubeletStandIn{bed: bed, spire: spire, node: node}

	apps := map[string]func(p *pod, port uint16){
		"web":            func(p *pod, port uint16) { p.serveHTTP(t, port) },
		"redis-exporter": func(p *pod, port uint16) { p.serveHTTP(t, port) },
		"redis": func(p *pod, port uint16) {
			if port != 6379 {
				t.Fatalf("redis container port %d, want 6379", port)
			}
			p.startRedis(t, bed.dir)
		},
	}
	web := kubelet.run(t, "web", specs["web"], apps)
	redis := kubelet.run(t, "redis", specs["redis"], apps)

	// The web app's Redis address, with the pod's IP for the Service name.
	_, redisPort, err := net.SplitHostPort(envValue(t, specs["web"].Containers[0], "REDIS_ADDR"))
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.ParseUint(redisPort, 10, 16)
	if err != nil {
		t.Fatal(err)
	}
	c, err := web.dial(t, redis.ip, uint16(port))
	if err != nil {
		t.Fatal(err)
	}
	value := make([]byte, 64<<10)
	_, _ = rand.Read(value)
	if reply, err := redisDo(c, "SET", "k", string(value)); err != nil || reply != "OK" {
		t.Fatalf("SET from the web pod: %q, %v", reply, err)
	}
	if got, err := redisDo(c, "GET", "k"); err != nil || !bytes.Equal([]byte(got), value) {
		t.Fatalf("GET from the web pod: %d bytes, %v; want the %d bytes set", len(got), err, len(value))
	}
	c.Close()
	for range 3 {
		body, err := web.get(t, redis.ip, 9121)
		if want := "redis from 127.0.0.1"; err != nil || body != want {
			t.Fatalf("GET redis:9121 from the web pod: %q, %v; want %q (delivered by the redis pod's proxy)", body, err, want)
		}
	}

	webID, redisID := kubelet.id(specs["web"]), kubelet.id(specs["redis"])
	inbound := netip.AddrPortFrom(redis.ip, 4143).String()
	meshtest.Eventually(t, "the Redis connection to be counted closed by the redis pod's proxy", func() bool {
		return redis.metric(t, "tcp_close_total", map[string]string{"direction": "inbound", "peer": "dst", "target_addr": "127.0.0.1:6379"}) == 1
	})
	// Redis went to 4143 over mTLS, with the web pod's ID, undetected.
	if n := redis.metric(t, "tcp_open_total", map[string]string{
		"direction": "inbound", "peer": "dst", "client_id": webID, "target_addr": "127.0.0.1:6379",
	}); n != 1 {
		t.Errorf("redis pod's proxy: %v connections from %s forwarded to Redis, want 1", n, webID)
	}
	if n := web.metric(t, "protocol_detect_total", map[string]string{"direction": "outbound"}); n != 3 {
		t.Errorf("web pod's proxy detected %v connections, want only the 3 HTTP ones (6379 is opaque)", n)
	}
	if n := web.metric(t, "tcp_open_total", map[string]string{
		"direction": "outbound", "peer": "dst", "tls": "true", "server_id": redisID, "target_addr": inbound,
	}); n < 2 || n > 4 {
		t.Errorf("web pod's proxy: %v mTLS connections to %s as %s, want Redis's and 1 to 3 for HTTP", n, inbound, redisID)
	}
	all := redis.metric(t, "tcp_open_total", map[string]string{"direction": "inbound", "peer": "src"})
	on4143 := redis.metric(t, "tcp_open_total", map[string]string{
		"direction": "inbound", "peer": "src", "tls": "true", "client_id": webID, "target_addr": inbound,
	})
	if on4143 < 2 || on4143 != all {
		t.Errorf("redis pod's proxy: %v mTLS connections from %s on %s of %v inbound, want all, at least 2", on4143, webID, inbound, all)
	}
	// HTTP requests were counted on both sides with the other's ID.
	if n := web.metric(t, "request_total", map[string]string{"direction": "outbound", "tls": "true", "server_id": redisID}); n != 3 {
		t.Errorf("web pod's proxy: %v requests to %s over mTLS, want 3", n, redisID)
	}
	if n := redis.metric(t, "request_total", map[string]string{"direction": "inbound", "tls": "true", "client_id": webID}); n != 3 {
		t.Errorf("redis pod's proxy: %v requests from %s over mTLS, want 3", n, webID)
	}
	// The web app's readiness probe, from outside the mesh, went through
	// the web pod's inbound proxy as plaintext.
	if n := web.metric(t, "tcp_open_total", map[string]string{
		"direction": "inbound", "peer": "src", "tls": "no_identity", "target_addr": netip.AddrPortFrom(web.ip, 8080).String(),
	}); n < 1 {
		t.Errorf("web pod's proxy forwarded %v unmeshed connections to the app, want its probes", n)
	}
}

// injectExample injects the workloads of examples/kubernetes/app.yaml with
// the default configuration and the webhook's policy (only opted-in pods),
// after edit has had a look at each pod spec, and returns the injected pod
// specs by workload name.
func injectExample(t *testing.T, edit func(name string, spec *corev1.PodSpec)) map[string]*corev1.PodSpec {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "examples", "kubernetes", "app.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	docs, err := manifest.Read(bytes.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	in, err := inject.New(inject.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	namespaces := map[string]map[string]string{}
	var workloads []inject.Workload
	for _, d := range docs {
		h, err := manifest.ReadHeader(d.Body)
		if err != nil {
			t.Fatal(err)
		}
		if h.GVK() == "v1/Namespace" {
			namespaces[h.Metadata.Name] = h.Metadata.Annotations
		}
		w, ok := inject.NewWorkload(h.GVK())
		if !ok {
			continue
		}
		if err := manifest.DecodeStrict(d.Body, w.Object); err != nil {
			t.Fatal(err)
		}
		workloads = append(workloads, w)
	}
	specs := map[string]*corev1.PodSpec{}
	for _, w := range workloads {
		edit(w.Meta.Name, w.Spec)
		res, err := in.Pod(w.PodMeta, w.Spec, w.Scope(namespaces[w.Meta.Namespace]), inject.WhenEnabled)
		if err != nil || res.Action != inject.ActionInjected {
			t.Fatalf("injecting %s: %+v, %v", w.Meta.Name, res, err)
		}
		specs[w.Meta.Name] = w.Spec
	}
	if specs["web"] == nil || specs["redis"] == nil {
		t.Fatalf("app.yaml has no web and redis workloads: %v", specs)
	}
	return specs
}

// kubeletStandIn runs injected pod specs in the test bed as the kubelet
// would, with the substitutions listed above
// TestInjectedExamplePodsMeshRedisAndHTTPAndAnswerProbes.
type kubeletStandIn struct {
	bed   *testBed
	spire *spiretest.Env
	node  *pod // probes come from here
}

// id is the SPIFFE ID the pod's service account is registered under.
func (k *kubeletStandIn) id(spec *corev1.PodSpec) string {
	return "spiffe://" + k.spire.TrustDomain().Name() + "/ns/demo/sa/" + spec.ServiceAccountName
}

// run starts the pod: its init containers in order (a native sidecar until
// its startup probe passes), then a stand-in for each app container from
// apps, by container name; it then checks that every probe of the spec
// answers.
func (k *kubeletStandIn) run(t *testing.T, name string, spec *corev1.PodSpec, apps map[string]func(p *pod, port uint16)) *pod {
	t.Helper()
	p := k.bed.unmeshedPod(t, name)
	bin := spiretest.CopyExecutable(t, meshproxyBin) // the image, one copy per pod
	k.spire.CreateEntry(t, k.id(spec), []string{spiretest.PathSelector(bin)}, 0)
	volumes := k.volumes(t, spec)
	for _, c := range spec.InitContainers {
		argv := containerArgs(t, c)
		switch {
		case c.Name == inject.InitContainerName:
			if sc := c.SecurityContext; sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 0 {
				t.Fatalf("%s: the init container must run as root for iptables", name)
			}
			p.ns.MustRun(t, bin, argv...)
		case c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways:
			if len(argv) == 0 || argv[0] != "run" {
				t.Fatalf("%s: sidecar %s runs %q, want meshproxy run", name, c.Name, argv)
			}
			sc := c.SecurityContext
			if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
				t.Fatalf("%s: sidecar %s has no non-root runAsUser", name, c.Name)
			}
			uid := uint32(*sc.RunAsUser)
			env := containerEnv(t, c, volumes)
			checkMeshedNetworks(t, c)
			p.proxy = meshtest.StartProcessWith(t, bin, meshtest.ProcessOptions{
				Env:        env,
				Credential: &syscall.Credential{Uid: uid, Gid: uid},
				Start:      p.ns.Start,
				HTTPClient: p.httpClient(t),
			}, argv[1:]...)
			meshtest.Eventually(t, name+"'s startup probe to pass", func() bool {
				return k.probe(t, p, c, c.StartupProbe) == nil
			})
		default:
			t.Fatalf("%s: unexpected init container %s", name, c.Name)
		}
	}
	if p.proxy == nil {
		t.Fatalf("%s: no native sidecar proxy in the injected spec", name)
	}
	for _, c := range spec.Containers {
		start, ok := apps[c.Name]
		if !ok || len(c.Ports) != 1 {
			t.Fatalf("%s: no stand-in for container %s with ports %v", name, c.Name, c.Ports)
		}
		start(p, uint16(c.Ports[0].ContainerPort))
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		for _, pr := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
			if pr == nil {
				continue
			}
			if err := k.probe(t, p, c, pr); err != nil {
				t.Errorf("%s: probe of container %s: %v", name, c.Name, err)
			}
		}
	}
	return p
}

// volumes returns the host directory standing in for each volume the test
// bed can provide: the SPIFFE CSI volume, a directory with a link named as
// the spec's socket file to the SPIRE agent's socket.
func (k *kubeletStandIn) volumes(t *testing.T, spec *corev1.PodSpec) map[string]string {
	t.Helper()
	dirs := map[string]string{}
	for _, v := range spec.Volumes {
		if v.Name != inject.SocketVolumeName {
			continue
		}
		if v.CSI == nil || v.CSI.Driver != inject.DefaultCSIDriver {
			t.Fatalf("volume %s: %+v, want the %s CSI driver", v.Name, v.VolumeSource, inject.DefaultCSIDriver)
		}
		dir, err := os.MkdirTemp(k.bed.dir, "csi-")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(k.spire.AgentSocket(), filepath.Join(dir, inject.DefaultSocketFile)); err != nil {
			t.Fatal(err)
		}
		dirs[v.Name] = dir
	}
	return dirs
}

// containerArgs is the argv the container runs, its image's entrypoint
// being meshproxy.
func containerArgs(t *testing.T, c corev1.Container) []string {
	t.Helper()
	if len(c.Command) > 0 || c.Image != inject.DefaultImage {
		t.Fatalf("container %s: image %s, command %q: want the meshproxy image's entrypoint", c.Name, c.Image, c.Command)
	}
	return c.Args
}

// containerEnv is the container's environment as KEY=VALUE, with paths
// under its volumes' mount paths moved to the directories standing in for
// them. It fails t on a volume the test bed cannot provide, and when the
// Workload API socket is not under a mounted volume.
func containerEnv(t *testing.T, c corev1.Container, volumes map[string]string) []string {
	t.Helper()
	var env []string
	socketMounted := false
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			t.Fatalf("container %s: %s takes its value from elsewhere", c.Name, e.Name)
		}
		v := e.Value
		for _, m := range c.VolumeMounts {
			dir, ok := volumes[m.Name]
			if !ok {
				t.Fatalf("container %s: the test bed has no stand-in for volume %s", c.Name, m.Name)
			}
			if after, found := strings.CutPrefix(v, "unix://"+m.MountPath+"/"); found {
				v = "unix://" + dir + "/" + after
				socketMounted = socketMounted || e.Name == "MESHPROXY_SPIFFE_SOCKET"
			}
		}
		env = append(env, e.Name+"="+v)
	}
	if !socketMounted {
		t.Fatalf("container %s: MESHPROXY_SPIFFE_SOCKET is not under one of its volume mounts %+v", c.Name, c.VolumeMounts)
	}
	return env
}

// envValue is the value of the container's variable name.
func envValue(t *testing.T, c corev1.Container, name string) string {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	t.Fatalf("container %s has no %s", c.Name, name)
	return ""
}

// probe performs an HTTP probe of container c in pod p from the node, as
// the kubelet does: any status from 200 to 399 passes.
func (k *kubeletStandIn) probe(t *testing.T, p *pod, c corev1.Container, pr *corev1.Probe) error {
	t.Helper()
	if pr == nil || pr.HTTPGet == nil {
		return fmt.Errorf("not an HTTP probe: %+v", pr)
	}
	h := pr.HTTPGet
	if h.Scheme != "" && h.Scheme != corev1.URISchemeHTTP {
		return fmt.Errorf("scheme %s", h.Scheme)
	}
	port := h.Port.IntValue()
	if h.Port.Type == intstr.String {
		for _, cp := range c.Ports {
			if cp.Name == h.Port.StrVal {
				port = int(cp.ContainerPort)
			}
		}
	}
	if port <= 0 || port > 65535 {
		return fmt.Errorf("port %s not found", h.Port.String())
	}
	url := "http://" + netip.AddrPortFrom(p.ip, uint16(port)).String() + h.Path
	resp, err := k.node.httpClient(t).Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < http.StatusOK || resp.StatusCode >= http.StatusBadRequest {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// checkMeshedNetworks checks that the injected proxy container takes the
// test bed's pod LANs to be meshed from its own environment, and is given
// no configuration file that could say so instead.
func checkMeshedNetworks(t *testing.T, c corev1.Container) {
	t.Helper()
	var nets string
	for _, e := range c.Env {
		switch e.Name {
		case "MESHPROXY_CONFIG":
			t.Fatalf("container %s: the injected spec names a config file %q", c.Name, e.Value)
		case "MESHPROXY_MESHED_NETWORKS":
			nets = e.Value
		}
	}
	for _, lan := range []netip.Prefix{podLAN, podLAN6} {
		covered := false
		for n := range strings.SplitSeq(nets, ",") {
			if p, err := netip.ParsePrefix(n); err == nil && p.Bits() <= lan.Bits() && p.Contains(lan.Addr()) {
				covered = true
			}
		}
		if !covered {
			t.Fatalf("container %s: MESHPROXY_MESHED_NETWORKS=%q does not contain the test bed's %v", c.Name, nets, lan)
		}
	}
}
