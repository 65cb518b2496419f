//go:build linux

package kubetest_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/seed722d2a70/meshproxy/test/kubetest"
)

func TestStartedClusterServesTheAPI(t *testing.T) {
	start := time.Now()
	c := kubetest.Start(t, kubetest.Options{})
	t.Logf("Start took %s", time.Since(start).Round(10*time.Millisecond))

	ctx := t.Context()
	svc, err := c.Client.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "redis"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "redis"},
			Ports:    []corev1.ServicePort{{Name: "resp", Port: 6380, TargetPort: intstr.FromString("resp")}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Client.CoreV1().Services("default").Get(ctx, "redis", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.UID != svc.UID || got.Spec.Ports[0].TargetPort.StrVal != "resp" {
		t.Errorf("read back %+v, created %+v", got.Spec, svc.Spec)
	}
	vip, err := netip.ParseAddr(got.Spec.ClusterIP)
	if err != nil || !kubetest.DefaultServiceCIDR.Contains(vip) {
		t.Errorf("ClusterIP %q, want one in %s", got.Spec.ClusterIP, kubetest.DefaultServiceCIDR)
	}
}

func TestKubeconfigWorksWithKubectl(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{})
	c.EnsureNamespace(t, "apps", map[string]string{"config.meshproxy.io/opaque-ports": "6379"})
	c.Apply(t, `
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: apps}
data: {mode: mesh}
`)
	cm, err := c.Client.CoreV1().ConfigMaps("apps").Get(t.Context(), "settings", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["mode"] != "mesh" {
		t.Errorf("ConfigMap data %v, want mode=mesh", cm.Data)
	}
	ann := c.Kubectl(t, "", "get", "namespace", "apps", "-o", `jsonpath={.metadata.annotations.config\.meshproxy\.io/opaque-ports}`)
	if strings.TrimSpace(ann) != "6379" {
		t.Errorf("namespace annotation %q, want 6379", ann)
	}
	// A pod without kube-proxy has an address but no namespace.
	pod := c.AddPod(t, kubetest.PodSpec{Namespace: "apps", Name: "web", Ready: true})
	if pod.NS != nil || !kubetest.DefaultClusterCIDR.Contains(pod.IP) {
		t.Errorf("pod IP %s, namespace %v; want an IP in %s and no namespace", pod.IP, pod.NS, kubetest.DefaultClusterCIDR)
	}
	got, err := c.Client.CoreV1().Pods("apps").Get(t.Context(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != corev1.PodRunning || got.Status.PodIP != pod.IP.String() || got.Spec.NodeName != c.NodeName {
		t.Errorf("pod status %s %s on %q, want Running %s on %q", got.Status.Phase, got.Status.PodIP, got.Spec.NodeName, pod.IP, c.NodeName)
	}
}

// redisService is a Service whose port differs from its pods' port, which
// it names.
func redisService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "redis", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "redis"},
			Ports:    []corev1.ServicePort{{Name: "resp", Port: 6380, TargetPort: intstr.FromString("resp")}},
		},
	}
}

// redisPod is a pod of redisService, serving on 6379 named "resp".
func redisPod(name string, ready bool) kubetest.PodSpec {
	return kubetest.PodSpec{
		Name:   name,
		Labels: map[string]string{"app": "redis"},
		Containers: []corev1.Container{{
			Name:  "redis",
			Ports: []corev1.ContainerPort{{Name: "resp", ContainerPort: 6379}},
		}},
		Ready: ready,
	}
}

// waitFor polls cond every 100 ms until it returns true or the deadline
// passes; the last of its messages says why it failed.
func waitFor(t *testing.T, timeout time.Duration, cond func(ctx context.Context) (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	var msg string
	for {
		var ok bool
		if ok, msg = cond(ctx); ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("after %s: %s", timeout, msg)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
