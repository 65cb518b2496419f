//go:build linux

package kubetest

import (
	"context"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/seed722d2a70/meshproxy/test/netns"
)

// PodSpec describes a pod for AddPod. Only Name is required.
type PodSpec struct {
	// Namespace defaults to "default"; it is created when missing.
	Namespace string
	Name      string
	// Labels select the pod into Services; Annotations are copied as
	// they are.
	Labels      map[string]string
	Annotations map[string]string
	// ServiceAccount defaults to "default"; it is created when missing,
	// since no controller does it here.
	ServiceAccount string
	// Containers default to one named "main" without ports; a container's
	// Image defaults to "none": nothing runs it. Name ports here for
	// Services' named targetPorts.
	Containers []corev1.Container
	// Ready is the pod's Ready condition: a pod not Ready is in its
	// Services' EndpointSlices as not ready, and kube-proxy ignores it.
	Ready bool
	// IP is the pod's IP; default the next free one of the cluster CIDR.
	// Its /30 must not be another pod's.
	IP netip.Addr
}

// Pod is a pod made by AddPod.
type Pod struct {
	Namespace, Name string
	IP              netip.Addr
	// NS is the pod's network namespace: listen there to be the pod's
	// server, dial from there to be its client. Nil without
	// Options.KubeProxy.
	NS *netns.NS
}

// AddPod does what the scheduler, the kubelet and the CNI plugin would: it
// creates the Pod bound to the node (no service-account token mounted),
// with KubeProxy gives it a network namespace routed through the node's,
// and writes its status: Running, its IP, and Ready as spec says. The Pod
// is deleted and its namespace removed when t ends.
func (c *Cluster) AddPod(t testing.TB, spec PodSpec) *Pod {
	t.Helper()
	if spec.Name == "" {
		t.Fatal("kubetest: AddPod needs a Name")
	}
	if spec.Namespace == "" {
		spec.Namespace = "default"
	}
	if spec.ServiceAccount == "" {
		spec.ServiceAccount = "default"
	}
	if len(spec.Containers) == 0 {
		spec.Containers = []corev1.Container{{Name: "main"}}
	}
	containers := make([]corev1.Container, len(spec.Containers))
	for i, ctr := range spec.Containers {
		if ctr.Image == "" {
			ctr.Image = "none"
		}
		containers[i] = ctr
	}
	c.EnsureNamespace(t, spec.Namespace, nil)
	c.ensureServiceAccount(t, spec.Namespace, spec.ServiceAccount)

	c.mu.Lock()
	var block netip.Prefix
	var err error
	ip := spec.IP
	if ip.IsValid() {
		block, err = c.pods.reserve(ip)
	} else {
		block, ip, err = c.pods.allocate()
	}
	c.mu.Unlock()
	if err != nil {
		t.Fatalf("kubetest: pod %s/%s: %v", spec.Namespace, spec.Name, err)
	}
	p := &Pod{Namespace: spec.Namespace, Name: spec.Name, IP: ip}
	t.Cleanup(func() {
		c.mu.Lock()
		c.pods.release(block)
		c.mu.Unlock()
	})

	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	noToken := false
	pod, err := c.Client.CoreV1().Pods(spec.Namespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   spec.Namespace,
			Name:        spec.Name,
			Labels:      spec.Labels,
			Annotations: spec.Annotations,
		},
		Spec: corev1.PodSpec{
			NodeName:                     c.NodeName,
			ServiceAccountName:           spec.ServiceAccount,
			AutomountServiceAccountToken: &noToken,
			Containers:                   containers,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: creating pod %s/%s: %v", spec.Namespace, spec.Name, err)
	}
	t.Cleanup(func() { c.deletePod(t, p) })

	if c.Node != nil {
		p.NS = netns.New(t, "ktpod")
		c.plugPod(t, p.NS, block, ip)
	}

	now := metav1.Now()
	status := conditionStatus(spec.Ready)
	pod.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		HostIP:    c.nodeIP.String(),
		HostIPs:   []corev1.HostIP{{IP: c.nodeIP.String()}},
		PodIP:     ip.String(),
		PodIPs:    []corev1.PodIP{{IP: ip.String()}},
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: status, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: status, LastTransitionTime: now},
		},
	}
	if _, err := c.Client.CoreV1().Pods(spec.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("kubetest: writing status of pod %s/%s: %v", spec.Namespace, spec.Name, err)
	}
	return p
}

// SetReady sets the Ready (and ContainersReady) condition of a pod, as the
// kubelet does when its readiness probe starts or stops passing.
func (c *Cluster) SetReady(t testing.TB, namespace, name string, ready bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	pods := c.Client.CoreV1().Pods(namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		status, now := conditionStatus(ready), metav1.Now()
		for _, typ := range []corev1.PodConditionType{corev1.ContainersReady, corev1.PodReady} {
			found := false
			for i := range pod.Status.Conditions {
				cond := &pod.Status.Conditions[i]
				if cond.Type == typ {
					found = true
					if cond.Status != status {
						cond.Status, cond.LastTransitionTime = status, now
					}
				}
			}
			if !found {
				pod.Status.Conditions = append(pod.Status.Conditions,
					corev1.PodCondition{Type: typ, Status: status, LastTransitionTime: now})
			}
		}
		_, err = pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("kubetest: setting pod %s/%s ready=%t: %v", namespace, name, ready, err)
	}
}

// deletePod deletes a pod at once: with no kubelet to confirm, a graceful
// deletion would leave it terminating forever.
func (c *Cluster) deletePod(t testing.TB, p *Pod) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	err := c.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, *metav1.NewDeleteOptions(0))
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("kubetest: deleting pod %s/%s: %v", p.Namespace, p.Name, err)
	}
}

func conditionStatus(b bool) corev1.ConditionStatus {
	if b {
		return corev1.ConditionTrue
	}
	return corev1.ConditionFalse
}
