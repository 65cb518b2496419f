package inject_test

import (
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/internal/manifest"
	"github.com/seed722d2a70/meshproxy/ports"
)

// decodeWorkloads returns the decoded workloads of a stream, List items
// included, in order.
func decodeWorkloads(t *testing.T, stream []byte) []inject.Workload {
	t.Helper()
	docs, err := manifest.Read(strings.NewReader(string(stream)))
	if err != nil {
		t.Fatal(err)
	}
	var out []inject.Workload
	var add func(body []byte)
	add = func(body []byte) {
		h, err := manifest.ReadHeader(body)
		if err != nil {
			t.Fatal(err)
		}
		if h.GVK() == "v1/List" {
			var l corev1.List
			if err := manifest.DecodeStrict(body, &l); err != nil {
				t.Fatal(err)
			}
			for _, it := range l.Items {
				add(it.Raw)
			}
			return
		}
		w, ok := inject.NewWorkload(h.GVK())
		if !ok {
			return
		}
		if err := manifest.DecodeStrict(body, w.Object); err != nil {
			t.Fatal(err)
		}
		out = append(out, w)
	}
	for _, d := range docs {
		add(d.Body)
	}
	return out
}

// TestUninjectRoundTrip checks that uninjecting injected output gives back
// the original workloads, field for field.
func TestUninjectRoundTrip(t *testing.T) {
	for _, name := range []string{"redis-statefulset", "web-deployment", "cronjob", "pod", "multi", "list", "disabled"} {
		t.Run(name, func(t *testing.T) {
			for _, native := range []bool{true, false} {
				in := newInjector(t, func(c *inject.Config) { c.NativeSidecar = native })
				orig := readFile(t, filepath.Join("testdata", name+".yaml"))
				injected, _, err := in.Stream(orig, inject.StreamOptions{})
				if err != nil {
					t.Fatal(err)
				}
				back, _, err := in.Stream(injected, inject.StreamOptions{Uninject: true})
				if err != nil {
					t.Fatal(err)
				}
				want, got := decodeWorkloads(t, orig), decodeWorkloads(t, back)
				if len(want) != len(got) {
					t.Fatalf("%d workloads, want %d", len(got), len(want))
				}
				for i := range want {
					if !equality.Semantic.DeepEqual(want[i].Object, got[i].Object) {
						t.Errorf("native=%v: workload %d differs after uninject:\n%+v\nwant\n%+v", native, i, got[i].Object, want[i].Object)
					}
				}
			}
		})
	}
}

func TestStreamResults(t *testing.T) {
	in := newInjector(t, nil)
	tests := []struct {
		file string
		opts inject.StreamOptions
		want []string // "Object action[ reason]"
	}{
		{"disabled", inject.StreamOptions{}, []string{
			"Deployment shop/legacy skipped meshproxy.io/inject=disabled",
			"DaemonSet monitoring/node-exporter skipped hostNetwork: redirection would capture the node's traffic",
		}},
		{"web-deployment", inject.StreamOptions{Policy: inject.WhenEnabled}, []string{
			"Deployment shop/web skipped meshproxy.io/inject not enabled",
		}},
		{"multi", inject.StreamOptions{Policy: inject.WhenEnabled}, []string{
			"DaemonSet billing/billing-agent injected", "Job billing/billing-backfill injected",
		}},
		{"multi", inject.StreamOptions{Policy: inject.WhenEnabled, Namespaces: map[string]map[string]string{}}, []string{
			"DaemonSet billing/billing-agent injected", "Job billing/billing-backfill injected",
		}},
		{"already-injected", inject.StreamOptions{}, []string{"Deployment shop/web unchanged"}},
		{"cronjob", inject.StreamOptions{Uninject: true}, []string{"CronJob shop/nightly-report unchanged"}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			_, results, err := in.Stream(readFile(t, filepath.Join("testdata", tc.file+".yaml")), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range results {
				s := r.Object + " " + string(r.Action)
				if r.Reason != "" {
					s += " " + r.Reason
				}
				got = append(got, s)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("results\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

// TestNamespaceAnnotationsFromOptions checks that namespaces known only
// from the options (the webhook's case) enable injection and give settings.
func TestNamespaceAnnotationsFromOptions(t *testing.T) {
	in := newInjector(t, nil)
	out, results, err := in.Stream(readFile(t, "testdata/cronjob.yaml"), inject.StreamOptions{
		Policy: inject.WhenEnabled,
		Namespaces: map[string]map[string]string{"shop": {
			inject.AnnotationInject:            inject.Enabled,
			inject.AnnotationSkipOutboundPorts: "443",
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 || results[0].Action != inject.ActionInjected {
		t.Fatalf("results %+v", results)
	}
	if !strings.Contains(string(out), "--skip-outbound-ports=443") {
		t.Errorf("namespace's skip-outbound-ports not applied:\n%s", out)
	}
}

func TestStreamErrors(t *testing.T) {
	in := newInjector(t, nil)
	tests := []struct {
		name, input string
		want        error
	}{
		{"unknown field", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containerz: []\n", manifest.ErrDecode},
		{"duplicate field", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nmetadata: {name: q}\n", manifest.ErrDecode},
		{"not yaml", "apiVersion: v1\nkind: [\n", manifest.ErrDecode},
		{"bad inject value", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {meshproxy.io/inject: yes-please}\nspec: {containers: [{name: a, image: b}]}\n", inject.ErrBadAnnotation},
		{"bad port list", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {config.meshproxy.io/opaque-ports: \"6379,70000\"}\nspec: {containers: [{name: a, image: b}]}\n", ports.ErrInvalid},
		{"bad log level", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {config.meshproxy.io/proxy-log-level: loud}\nspec: {containers: [{name: a, image: b}]}\n", inject.ErrBadAnnotation},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := in.Stream([]byte(tc.input), inject.StreamOptions{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

// TestPassThrough checks that documents inject does not change come out
// byte for byte, separators and comments included.
func TestPassThrough(t *testing.T) {
	in := newInjector(t, nil)
	input := "# leading comment\n---\napiVersion: v1\nkind: ConfigMap # trailing\nmetadata: {name: c}\n--- # sep comment\n\n---\napiVersion: example.com/v1\nkind: Widget\nspec: {x: 1}\n"
	out, results, err := in.Stream([]byte(input), inject.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != input || len(results) != 0 {
		t.Errorf("output %q results %v, want the input unchanged", out, results)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*inject.Config)
	}{
		{"no image", func(c *inject.Config) { c.Image = "" }},
		{"root proxy", func(c *inject.Config) { c.ProxyUID = 0 }},
		{"bad socket source", func(c *inject.Config) { c.Socket = "nfs" }},
		{"bad log level", func(c *inject.Config) { c.LogLevel = "trace" }},
		{"no admin port", func(c *inject.Config) { c.AdminPort = 0 }},
		{"admin port on the inbound port", func(c *inject.Config) { c.AdminPort = c.InboundPort }},
		{"outbound port on the inbound port", func(c *inject.Config) { c.OutboundPort = c.InboundPort }},
		{"UID beyond 32 bits", func(c *inject.Config) { c.ProxyUID = 1 << 32 }},
		{"destination controller without a port", func(c *inject.Config) { c.DestinationAddr = "meshproxy-destination" }},
		{"destination controller identity not an ID", func(c *inject.Config) { c.DestinationIdentity = "spiffe://mesh.local" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := inject.DefaultConfig()
			tc.edit(&cfg)
			if _, err := inject.New(cfg); !errors.Is(err, inject.ErrInvalidConfig) {
				t.Fatalf("error %v, want ErrInvalidConfig", err)
			}
		})
	}
}

// TestProxyContainerRunsWithItsSettings loads the injected proxy
// container's arguments and environment with meshproxy run's own config
// loader, so a renamed setting breaks this test rather than a pod.
func TestProxyContainerRunsWithItsSettings(t *testing.T) {
	in := newInjector(t, func(c *inject.Config) {
		c.InboundPort, c.OutboundPort, c.AdminPort = 14143, 14140, 14191
		c.DestinationAddr = "meshproxy-destination.meshproxy.svc.cluster.local:8086"
		c.DestinationIdentity = "spiffe://mesh.local/ns/mesh/sa/meshproxy-destination"
	})
	out, _, err := in.Stream(readFile(t, "testdata/web-deployment.yaml"), inject.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ws := decodeWorkloads(t, out)
	spec := ws[0].Spec
	var proxy, initC *corev1.Container
	for i := range spec.InitContainers {
		switch spec.InitContainers[i].Name {
		case inject.ProxyContainerName:
			proxy = &spec.InitContainers[i]
		case inject.InitContainerName:
			initC = &spec.InitContainers[i]
		}
	}
	if proxy == nil || initC == nil {
		t.Fatalf("proxy %v init %v", proxy, initC)
	}
	if proxy.Args[0] != "run" {
		t.Fatalf("proxy args %q", proxy.Args)
	}
	env := map[string]string{}
	for _, e := range proxy.Env {
		env[e.Name] = e.Value
	}
	cfg, err := config.Load("meshproxy run", proxy.Args[1:], func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatalf("the proxy would not start: %v", err)
	}
	if cfg.Inbound.Addr != "[::]:14143" || cfg.Outbound.Addr != "[::]:14140" || cfg.Admin.Addr != "[::]:14191" {
		t.Errorf("addresses %q %q %q", cfg.Inbound.Addr, cfg.Outbound.Addr, cfg.Admin.Addr)
	}
	if got := cfg.OpaquePorts.String(); got != "9000-9010" {
		t.Errorf("opaque ports %q, want the annotation's 9000-9010", got)
	}
	if cfg.Log.Level != "debug" {
		t.Errorf("log level %q", cfg.Log.Level)
	}
	if cfg.Outbound.DestinationAddr != "meshproxy-destination.meshproxy.svc.cluster.local:8086" ||
		!slices.Equal(cfg.Outbound.DestinationIdentity, []string{"spiffe://mesh.local/ns/mesh/sa/meshproxy-destination"}) {
		t.Errorf("destination controller %q, %q", cfg.Outbound.DestinationAddr, cfg.Outbound.DestinationIdentity)
	}
	if cfg.Identity.SPIFFESocket != "unix:///spiffe-workload-api/spire-agent.sock" {
		t.Errorf("socket %q", cfg.Identity.SPIFFESocket)
	}
	if m := proxy.VolumeMounts; len(m) != 1 || m[0].MountPath != "/spiffe-workload-api" {
		t.Errorf("socket mount %+v", m)
	}
	// Transparent mode (MESHPROXY_TRANSPARENT) is a setting of the
	// interception work; the proxy must be told to use it.
	if env["MESHPROXY_TRANSPARENT"] != "true" {
		t.Errorf("proxy not in transparent mode: %v", env)
	}
	wantInit := []string{"init", "--proxy-uid=2102", "--inbound-port=14143", "--outbound-port=14140",
		"--admin-port=14191", "--skip-outbound-ports=5432"}
	if !slices.Equal(initC.Args, wantInit) {
		t.Errorf("init args %q, want %q", initC.Args, wantInit)
	}
	sc := initC.SecurityContext
	if !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) || *sc.AllowPrivilegeEscalation || *sc.Privileged {
		t.Errorf("init security context %+v", sc)
	}
	if *proxy.SecurityContext.RunAsUser != inject.DefaultProxyUID || len(proxy.SecurityContext.Capabilities.Add) != 0 {
		t.Errorf("proxy security context %+v", proxy.SecurityContext)
	}
}

// An opaque-ports annotation that lists no ports gives the proxy no opaque
// ports, not the default list: the injector must not write it as an empty
// variable, which the proxy reads as unset.
func TestEmptyOpaquePortsReachTheProxy(t *testing.T) {
	for _, v := range []string{"", "none"} {
		t.Run(v, func(t *testing.T) {
			in := newInjector(t, nil)
			meta := metav1.ObjectMeta{Annotations: map[string]string{inject.AnnotationOpaquePorts: v}}
			spec := corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}
			if _, err := in.Pod(&meta, &spec, inject.Scope{Pod: meta.Annotations}, inject.UnlessDisabled); err != nil {
				t.Fatal(err)
			}
			env := map[string]string{}
			for _, c := range append(spec.InitContainers, spec.Containers...) {
				if c.Name == inject.ProxyContainerName {
					for _, e := range c.Env {
						env[e.Name] = e.Value
					}
				}
			}
			cfg, err := config.Load("meshproxy run", nil, func(k string) string { return env[k] }, io.Discard)
			if err != nil {
				t.Fatalf("the proxy would not start: %v", err)
			}
			if got := cfg.OpaquePorts.String(); got != "" {
				t.Errorf("proxy opaque ports %q, want none", got)
			}
		})
	}
}
