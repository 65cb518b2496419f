package inject_test

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/inject"
)

// proxyEnv injects a bare pod with the given annotations on the pod,
// workload and namespace layers and returns the proxy container's
// environment.
func proxyEnv(t *testing.T, in *inject.Injector, scope inject.Scope) (map[string]string, error) {
	t.Helper()
	meta := &metav1.ObjectMeta{Name: "p", Annotations: scope.Pod}
	spec := &corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}
	if _, err := in.Pod(meta, spec, scope, inject.UnlessDisabled); err != nil {
		return nil, err
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		if c.Name == inject.ProxyContainerName {
			env := map[string]string{}
			for _, e := range c.Env {
				env[e.Name] = e.Value
			}
			return env, nil
		}
	}
	t.Fatal("no proxy container")
	return nil, nil
}

// The meshed networks come from the closest annotation (pod, workload,
// namespace), else the injector's configuration, and reach the proxy as
// MESHPROXY_MESHED_NETWORKS, which meshproxy run's loader accepts.
func TestMeshedNetworksAnnotation(t *testing.T) {
	const key = inject.AnnotationMeshedNetworks
	tests := []struct {
		name  string
		cfg   []string // nil: the default
		scope inject.Scope
		want  string // "" : the variable is absent
	}{
		{"default", nil, inject.Scope{}, inject.DefaultMeshedNetworks},
		{"namespace", nil, inject.Scope{Namespace: map[string]string{key: "10.77.0.0/16"}}, "10.77.0.0/16"},
		{"workload over namespace", nil, inject.Scope{
			Workload:  map[string]string{key: " 10.1.0.0/16 , fd12::/16 ,"},
			Namespace: map[string]string{key: "10.77.0.0/16"},
		}, "10.1.0.0/16,fd12::/16"},
		{"pod over workload", nil, inject.Scope{
			Pod:      map[string]string{key: "192.168.5.0/24"},
			Workload: map[string]string{key: "10.1.0.0/16"},
		}, "192.168.5.0/24"},
		{"empty annotation sets none", nil, inject.Scope{Workload: map[string]string{key: ""}}, ""},
		{"injector configured with none", []string{}, inject.Scope{}, ""},
		{"injector's own list", []string{"10.100.0.0/16"}, inject.Scope{}, "10.100.0.0/16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := newInjector(t, func(c *inject.Config) {
				if tt.cfg != nil {
					c.MeshedNetworks = tt.cfg
				}
			})
			env, err := proxyEnv(t, in, tt.scope)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := env["MESHPROXY_MESHED_NETWORKS"]
			if got != tt.want || ok != (tt.want != "") {
				t.Errorf("MESHPROXY_MESHED_NETWORKS = %q (set %v), want %q", got, ok, tt.want)
			}
			cfg, err := config.Load("meshproxy run", nil, func(k string) string { return env[k] }, io.Discard)
			if err != nil {
				t.Fatalf("the proxy would not start: %v", err)
			}
			if want := strings.Split(tt.want, ","); tt.want != "" && !slices.Equal(cfg.MeshedNetworks, want) {
				t.Errorf("proxy's meshed networks %q, want %q", cfg.MeshedNetworks, want)
			}
		})
	}
}

func TestMeshedNetworksAnnotationErrors(t *testing.T) {
	in := newInjector(t, nil)
	for _, v := range []string{"10.0.0.0", "10.0.0.0/8,pods", "10.0.0.0/40", "fd00::/8%eth0"} {
		t.Run(v, func(t *testing.T) {
			_, err := proxyEnv(t, in, inject.Scope{Namespace: map[string]string{inject.AnnotationMeshedNetworks: v}})
			if !errors.Is(err, inject.ErrBadAnnotation) || !strings.Contains(err.Error(), inject.AnnotationMeshedNetworks) {
				t.Errorf("error %v, want ErrBadAnnotation naming %s", err, inject.AnnotationMeshedNetworks)
			}
		})
	}
	cfg := inject.DefaultConfig()
	cfg.MeshedNetworks = []string{"10.0.0.0/8", "cluster"}
	if _, err := inject.New(cfg); !errors.Is(err, inject.ErrInvalidConfig) {
		t.Errorf("New with a bad meshed network: %v, want ErrInvalidConfig", err)
	}
}
