//go:build linux

package check_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/seed722d2a70/meshproxy/check"
	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/install"
	"github.com/seed722d2a70/meshproxy/test/kubetest"
)

const controlPlaneNS = "meshproxy"

// run runs every check and returns the one named, failing the test when it
// is missing.
func run(t *testing.T, client kubernetes.Interface, name string) check.Result {
	t.Helper()
	for _, r := range check.Run(context.Background(), check.Options{Client: client, Namespace: controlPlaneNS}) {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no check %s", name)
	return check.Result{}
}

// expect fails t unless the check named has the outcome ok, and, failing,
// names want in a detail.
func expect(t *testing.T, client kubernetes.Interface, name string, ok bool, want string) {
	t.Helper()
	r := run(t, client, name)
	if r.OK != ok {
		t.Fatalf("%s: ok = %v, want %v; details:\n%s", name, r.OK, ok, strings.Join(r.Details, "\n"))
	}
	if !ok && !strings.Contains(strings.Join(r.Details, "\n"), want) {
		t.Errorf("%s: details do not name %q:\n%s", name, want, strings.Join(r.Details, "\n"))
	}
	if !ok && (r.Hint == "" || !strings.HasSuffix(r.Docs, "#check-"+name)) {
		t.Errorf("%s: hint %q, docs %q", name, r.Hint, r.Docs)
	}
}

// TestChecksAgainstARealAPIServer runs each check, passing and failing, on
// one cluster: first without the control plane, then with it installed, then
// with workloads made per case and deleted after it.
func TestChecksAgainstARealAPIServer(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{})
	ctx := context.Background()

	t.Run("the API unreachable fails and stops the checks", func(t *testing.T) {
		client := kubernetes.NewForConfigOrDie(&rest.Config{Host: "https://127.0.0.1:1", Timeout: 2 * time.Second})
		results := check.Run(ctx, check.Options{Client: client, Namespace: controlPlaneNS})
		if len(results) != 1 || results[0].Name != "api" || results[0].OK {
			t.Fatalf("results: %+v", results)
		}
	})
	t.Run("api and rbac pass for the admin", func(t *testing.T) {
		expect(t, c.Client, "api", true, "")
		expect(t, c.Client, "rbac", true, "")
	})
	t.Run("rbac fails for a user without rights", func(t *testing.T) {
		cfg := rest.CopyConfig(c.RESTConfig())
		cfg.Impersonate = rest.ImpersonationConfig{UserName: "nobody"}
		expect(t, kubernetes.NewForConfigOrDie(cfg), "rbac", false, "cannot list pods in all namespaces")
	})
	t.Run("no control plane", func(t *testing.T) {
		expect(t, c.Client, "control-plane-objects", false, "Deployment meshproxy/meshproxy-destination not found")
		expect(t, c.Client, "control-plane-ready", false, "Deployment meshproxy/meshproxy-injector not found")
		expect(t, c.Client, "webhook-ca", false, "not found")
		expect(t, c.Client, "spire-agent", false, "no DaemonSet")
		expect(t, c.Client, "csi-driver", false, "csi.spiffe.io")
	})

	o := install.DefaultOptions()
	tls, err := install.NewTLS(o.InjectorDNSNames(), time.Now(), install.DefaultCertValidity)
	if err != nil {
		t.Fatal(err)
	}
	o.TLS = tls
	manifests, err := install.Manifests(o)
	if err != nil {
		t.Fatal(err)
	}
	c.Apply(t, string(manifests))

	t.Run("control plane installed", func(t *testing.T) {
		expect(t, c.Client, "control-plane-objects", true, "")
		expect(t, c.Client, "control-plane-ready", false, "0 of 1 replicas available")
		for _, name := range []string{install.DestinationName, install.InjectorName} {
			setAvailable(t, c.Client, name)
		}
		expect(t, c.Client, "control-plane-ready", true, "")
		expect(t, c.Client, "webhook-ca", true, "")
	})
	t.Run("an object missing", func(t *testing.T) {
		must(t, c.Client.CoreV1().Services(controlPlaneNS).Delete(ctx, install.InjectorName, metav1.DeleteOptions{}))
		expect(t, c.Client, "control-plane-objects", false, "Service meshproxy/meshproxy-injector not found")
		c.Apply(t, string(manifests))
		expect(t, c.Client, "control-plane-objects", true, "")
	})
	t.Run("caBundle of another CA", func(t *testing.T) {
		other, err := install.NewTLS(o.InjectorDNSNames(), time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		whs := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
		wh, err := whs.Get(ctx, o.ClusterName("injector"), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wh.Webhooks[0].ClientConfig.CABundle = other.CAPEM
		if _, err := whs.Update(ctx, wh, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		expect(t, c.Client, "webhook-ca", false, "certificate signed by unknown authority")
		c.Apply(t, string(manifests))
		expect(t, c.Client, "webhook-ca", true, "")
	})
	t.Run("a certificate about to expire", func(t *testing.T) {
		short := o
		var err error
		if short.TLS, err = install.NewTLS(o.InjectorDNSNames(), time.Now(), time.Hour); err != nil {
			t.Fatal(err)
		}
		m, err := install.Manifests(short)
		if err != nil {
			t.Fatal(err)
		}
		c.Apply(t, string(m))
		expect(t, c.Client, "webhook-ca", false, "expires within")
		c.Apply(t, string(manifests))
		expect(t, c.Client, "webhook-ca", true, "")
	})
	t.Run("SPIRE agent and CSI driver present", func(t *testing.T) {
		c.EnsureNamespace(t, "spire", nil)
		labels := map[string]string{"app": "spire-agent"}
		_, err := c.Client.AppsV1().DaemonSets("spire").Create(ctx, &appsv1.DaemonSet{
			ObjectMeta: metav1.ObjectMeta{Name: "agent", Labels: labels},
			Spec: appsv1.DaemonSetSpec{
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "none"}}},
				},
			},
		}, metav1.CreateOptions{})
		must(t, err)
		expect(t, c.Client, "spire-agent", true, "")
		_, err = c.Client.StorageV1().CSIDrivers().Create(ctx, &storagev1.CSIDriver{
			ObjectMeta: metav1.ObjectMeta{Name: inject.DefaultCSIDriver},
		}, metav1.CreateOptions{})
		must(t, err)
		expect(t, c.Client, "csi-driver", true, "")
	})

	for _, tc := range workloadCases() {
		t.Run(tc.name, func(t *testing.T) {
			ns := strings.ReplaceAll(tc.name, " ", "-")
			if len(ns) > 63 {
				ns = ns[:63]
			}
			ns = strings.Trim(ns, "-")
			tc.setup(t, &env{c: c, ns: ns})
			expect(t, c.Client, tc.check, tc.ok, tc.want)
		})
	}

	t.Run("every check passes, and the outputs say so", func(t *testing.T) {
		results := check.Run(ctx, check.Options{Client: c.Client, Namespace: controlPlaneNS})
		if check.Failed(results) {
			var text bytes.Buffer
			_ = check.WriteText(&text, results)
			t.Fatalf("a check failed:\n%s", text.String())
		}
		var text bytes.Buffer
		must(t, check.WriteText(&text, results))
		for _, want := range []string{"kubernetes-api\n--------------\n✔ can reach the Kubernetes API\n", "configuration\n", "Status check results are ✔"} {
			if !strings.Contains(text.String(), want) {
				t.Errorf("text output lacks %q:\n%s", want, text.String())
			}
		}
		var js bytes.Buffer
		must(t, check.WriteJSON(&js, results))
		var parsed struct {
			Success bool           `json:"success"`
			Checks  []check.Result `json:"checks"`
		}
		must(t, json.Unmarshal(js.Bytes(), &parsed))
		if !parsed.Success || len(parsed.Checks) != len(results) {
			t.Errorf("json output: %s", js.String())
		}
	})
}

// env is where a workload case makes its objects: its own namespace.
type env struct {
	c  *kubetest.Cluster
	ns string
}

// meshed adds injection's mark to annotations.
func meshed(annotations map[string]string) map[string]string {
	out := map[string]string{inject.AnnotationInjected: "meshproxy:test"}
	for k, v := range annotations {
		out[k] = v
	}
	return out
}

func (e *env) pod(t *testing.T, spec kubetest.PodSpec) {
	t.Helper()
	spec.Namespace = e.ns
	e.c.AddPod(t, spec)
}

func (e *env) service(t *testing.T, name string, annotations map[string]string, selector map[string]string, ports ...corev1.ServicePort) {
	t.Helper()
	svcs := e.c.Client.CoreV1().Services(e.ns)
	_, err := svcs.Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
		Spec:       corev1.ServiceSpec{Selector: selector, Ports: ports},
	}, metav1.CreateOptions{})
	must(t, err)
	t.Cleanup(func() { must(t, svcs.Delete(context.Background(), name, metav1.DeleteOptions{})) })
}

func (e *env) policy(t *testing.T, np *networkingv1.NetworkPolicy) {
	t.Helper()
	nps := e.c.Client.NetworkingV1().NetworkPolicies(e.ns)
	_, err := nps.Create(context.Background(), np, metav1.CreateOptions{})
	must(t, err)
	t.Cleanup(func() { must(t, nps.Delete(context.Background(), np.Name, metav1.DeleteOptions{})) })
}

type workloadCase struct {
	name  string
	check string
	setup func(t *testing.T, e *env)
	ok    bool
	want  string // in a detail, when failing
}

var (
	injectedAnn = map[string]string{inject.AnnotationInjected: inject.DefaultImage}
	app         = map[string]string{"app": "web"}
)

func port(name string, p int32) []corev1.ContainerPort {
	return []corev1.ContainerPort{{Name: name, ContainerPort: p}}
}

func uid(u int64) *corev1.SecurityContext { return &corev1.SecurityContext{RunAsUser: &u} }

func workloadCases() []workloadCase {
	return []workloadCase{
		{"proxy current", "proxy-version", func(t *testing.T, e *env) {
			e.pod(t, kubetest.PodSpec{Name: "web", Annotations: injectedAnn})
		}, true, ""},
		{"proxy outdated", "proxy-version", func(t *testing.T, e *env) {
			e.pod(t, kubetest.PodSpec{Name: "web", Annotations: map[string]string{inject.AnnotationInjected: "ghcr.io/seed722d2a70/meshproxy:v0.1"}})
		}, false, "pod proxy-outdated/web runs ghcr.io/seed722d2a70/meshproxy:v0.1"},

		{"app uid distinct", "proxy-uid", func(t *testing.T, e *env) {
			e.pod(t, kubetest.PodSpec{Name: "web", Annotations: injectedAnn, Containers: []corev1.Container{{Name: "web", SecurityContext: uid(1000)}}})
			// Not meshed: the proxy's UID is no one's there.
			e.pod(t, kubetest.PodSpec{Name: "plain", Containers: []corev1.Container{{Name: "web", SecurityContext: uid(2102)}}})
		}, true, ""},
		{"app uid is the proxy uid", "proxy-uid", func(t *testing.T, e *env) {
			e.pod(t, kubetest.PodSpec{Name: "web", Annotations: injectedAnn, Containers: []corev1.Container{
				{Name: inject.ProxyContainerName, SecurityContext: uid(2102)}, {Name: "web", SecurityContext: uid(2102)},
			}})
		}, false, "pod app-uid-is-the-proxy-uid/web: container web runs as UID 2102"},
		{"app uid of the pod in an enabled namespace", "proxy-uid", func(t *testing.T, e *env) {
			e.c.EnsureNamespace(t, e.ns, map[string]string{inject.AnnotationInject: inject.Enabled})
			pods := e.c.Client.CoreV1().Pods(e.ns)
			u := int64(2102)
			_, err := pods.Create(context.Background(), &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "web"},
				Spec: corev1.PodSpec{
					SecurityContext: &corev1.PodSecurityContext{RunAsUser: &u},
					Containers:      []corev1.Container{{Name: "web", Image: "none"}},
				},
			}, metav1.CreateOptions{})
			must(t, err)
			t.Cleanup(func() {
				must(t, pods.Delete(context.Background(), "web", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}))
			})
		}, false, "container web runs as UID 2102"},

		{"opaque on both sides", "opaque-ports", func(t *testing.T, e *env) {
			e.pod(t, kubetest.PodSpec{Name: "web", Labels: app, Annotations: map[string]string{inject.AnnotationOpaquePorts: "5000"},
				Containers: []corev1.Container{{Name: "web", Ports: port("tcp", 5000)}}})
			e.service(t, "web", map[string]string{inject.AnnotationOpaquePorts: "80"}, app,
				corev1.ServicePort{Port: 80, TargetPort: intstr.FromInt32(5000)})
		}, true, ""},
		{"opaque on the pod only", "opaque-ports", func(t *testing.T, e *env) {
			e.pod(t, kubetest.PodSpec{Name: "web", Labels: app, Annotations: meshed(map[string]string{inject.AnnotationOpaquePorts: "5000"}),
				Containers: []corev1.Container{{Name: "web", Ports: port("tcp", 5000)}}})
			e.service(t, "web", nil, app, corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("tcp")})
		}, false, "Service opaque-on-the-pod-only/web port 80 → pod opaque-on-the-pod-only/web: target port 5000 is opaque on the pod (its annotation)"},
		{"opaque on the namespace only", "opaque-ports", func(t *testing.T, e *env) {
			e.c.EnsureNamespace(t, e.ns, map[string]string{inject.AnnotationOpaquePorts: "5000"})
			e.pod(t, kubetest.PodSpec{Name: "web", Labels: app, Annotations: meshed(nil), Containers: []corev1.Container{{Name: "web", Ports: port("tcp", 5000)}}})
			e.service(t, "web", nil, app, corev1.ServicePort{Port: 80, TargetPort: intstr.FromInt32(5000)})
		}, false, "is opaque on the pod (its namespace's annotation)"},
		{"opaque on the service not in the pod list", "opaque-ports", func(t *testing.T, e *env) {
			e.pod(t, kubetest.PodSpec{Name: "web", Labels: app, Annotations: meshed(map[string]string{inject.AnnotationOpaquePorts: "9999"}),
				Containers: []corev1.Container{{Name: "web", Ports: port("http", 8080)}}})
			e.service(t, "web", map[string]string{inject.AnnotationOpaquePorts: "80"}, app,
				corev1.ServicePort{Port: 80, TargetPort: intstr.FromInt32(8080)})
		}, false, "opaque on the Service, but target port 8080 is not opaque on the pod (its annotation)"},
		// Without a list of its own, the pod's endpoints follow the
		// Service: nothing disagrees. Nor does a pod without a proxy.
		{"opaque on the service and the pod without a list", "opaque-ports", func(t *testing.T, e *env) {
			e.pod(t, kubetest.PodSpec{Name: "web", Labels: app, Annotations: meshed(nil), Containers: []corev1.Container{{Name: "web", Ports: port("http", 8080)}}})
			e.service(t, "web", map[string]string{inject.AnnotationOpaquePorts: "80"}, app,
				corev1.ServicePort{Port: 80, TargetPort: intstr.FromInt32(8080)})
		}, true, ""},
		{"an unmeshed pod annotated", "opaque-ports", func(t *testing.T, e *env) {
			e.pod(t, kubetest.PodSpec{Name: "web", Labels: app, Annotations: map[string]string{inject.AnnotationOpaquePorts: "5000"},
				Containers: []corev1.Container{{Name: "web", Ports: port("tcp", 5000)}}})
			e.service(t, "web", nil, app, corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("tcp")})
		}, true, ""},

		{"target ports served", "target-ports", func(t *testing.T, e *env) {
			e.pod(t, kubetest.PodSpec{Name: "web", Labels: app, Containers: []corev1.Container{{Name: "web", Ports: port("http", 8080)}}})
			e.service(t, "web", nil, app, corev1.ServicePort{Name: "a", Port: 80, TargetPort: intstr.FromString("http")},
				corev1.ServicePort{Name: "b", Port: 8080})
		}, true, ""},
		{"named target port missing", "target-ports", func(t *testing.T, e *env) {
			e.pod(t, kubetest.PodSpec{Name: "web", Labels: app, Containers: []corev1.Container{{Name: "web", Ports: port("http", 8080)}}})
			e.service(t, "web", nil, app, corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("https")})
		}, false, `no container port named "https"`},
		{"numeric target port undeclared", "target-ports", func(t *testing.T, e *env) {
			e.pod(t, kubetest.PodSpec{Name: "web", Labels: app, Containers: []corev1.Container{{Name: "web", Ports: port("http", 8080)}}})
			e.service(t, "web", nil, app, corev1.ServicePort{Port: 80, TargetPort: intstr.FromInt32(9090)})
		}, false, "no container declares port 9090"},

		{"policy admits the inbound port", "network-policies", func(t *testing.T, e *env) {
			redis(t, e)
			e.policy(t, redisPolicy(6379, 4143))
		}, true, ""},
		{"policy drops meshed redis", "network-policies", func(t *testing.T, e *env) {
			redis(t, e)
			e.policy(t, redisPolicy(6379))
		}, false, "NetworkPolicy policy-drops-meshed-redis/redis: ingress rule 1 admits opaque port(s) 6379"},
	}
}

func redis(t *testing.T, e *env) {
	e.pod(t, kubetest.PodSpec{Name: "redis-0", Labels: map[string]string{"app": "redis"}, Annotations: injectedAnn,
		Containers: []corev1.Container{{Name: inject.ProxyContainerName}, {Name: "redis", Ports: port("resp", 6379)}}})
}

func redisPolicy(ports ...int32) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "redis"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "redis"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{}},
		},
	}
	for _, p := range ports {
		pp := intstr.FromInt32(p)
		np.Spec.Ingress[0].Ports = append(np.Spec.Ingress[0].Ports, networkingv1.NetworkPolicyPort{Port: &pp})
	}
	return np
}

// setAvailable writes a Deployment's status as its controller would once
// its pods are ready: no controller runs here.
func setAvailable(t *testing.T, client kubernetes.Interface, name string) {
	t.Helper()
	deps := client.AppsV1().Deployments(controlPlaneNS)
	d, err := deps.Get(context.Background(), name, metav1.GetOptions{})
	must(t, err)
	d.Status = appsv1.DeploymentStatus{
		ObservedGeneration: d.Generation, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1,
	}
	_, err = deps.UpdateStatus(context.Background(), d, metav1.UpdateOptions{})
	must(t, err)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
