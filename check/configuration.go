package check

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/install"
	"github.com/seed722d2a70/meshproxy/internal/manifest"
	"github.com/seed722d2a70/meshproxy/netpol"
	"github.com/seed722d2a70/meshproxy/ports"
)

// servicePort is one TCP port of a Service resolved on one of its pods.
type servicePort struct {
	svc    *corev1.Service
	port   corev1.ServicePort
	pod    *corev1.Pod
	target uint16 // 0: a named target port the pod does not have
}

// servicePorts resolves every TCP port of every Service with a selector on
// each pod it selects, and calls f.
func (c *cluster) servicePorts(ctx context.Context, f func(servicePort) error) error {
	services, err := c.listServices(ctx)
	if err != nil {
		return err
	}
	pods, err := c.listPods(ctx)
	if err != nil {
		return err
	}
	for i := range services {
		svc := &services[i]
		if len(svc.Spec.Selector) == 0 {
			continue
		}
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		for j := range pods {
			p := &pods[j]
			if p.Namespace != svc.Namespace || !sel.Matches(labels.Set(p.Labels)) {
				continue
			}
			for _, sp := range svc.Spec.Ports {
				if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
					continue
				}
				if err := f(servicePort{svc: svc, port: sp, pod: p, target: targetPort(sp, p)}); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// targetPort is the pod's port a Service port sends to; 0 when it is named
// and no app container of the pod has the name.
func targetPort(sp corev1.ServicePort, p *corev1.Pod) uint16 {
	switch {
	case sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal != "":
		for _, ctr := range appContainers(p) {
			for _, cp := range ctr.Ports {
				if cp.Name == sp.TargetPort.StrVal && (cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP) {
					return uint16(cp.ContainerPort)
				}
			}
		}
		return 0
	case sp.TargetPort.IntVal > 0:
		return uint16(sp.TargetPort.IntVal)
	}
	return uint16(sp.Port)
}

func (sp servicePort) String() string {
	return fmt.Sprintf("Service %s/%s port %d → %s", sp.svc.Namespace, sp.svc.Name, sp.port.Port, podName(sp.pod))
}

// checkOpaquePorts finds Service ports the destination controller takes as
// opaque while their target port on the pods is not (or the other way): a
// client reaching the pod through the Service and one reaching it directly
// then disagree on whether to detect the protocol, the trap of
// linkerd2#6160 and #6177. The Service's side is its opaque-ports
// annotation, else the default list on the port or its target port; the
// pod's is its annotation, else its namespace's, else the default list.
func checkOpaquePorts(ctx context.Context, c *cluster) ([]string, error) {
	defaults, err := c.defaultOpaque(ctx)
	if err != nil {
		return nil, fmt.Errorf("the installation's opaque ports: %w", err)
	}
	namespaces, err := c.listNamespaces(ctx)
	if err != nil {
		return nil, err
	}
	var faults []string
	err = c.servicePorts(ctx, func(sp servicePort) error {
		if sp.target == 0 {
			return nil // target-ports reports it
		}
		svcOpaque := defaults.Contains(uint16(sp.port.Port)) || defaults.Contains(sp.target)
		if v, ok := sp.svc.Annotations[inject.AnnotationOpaquePorts]; ok {
			set, err := ports.Parse(v)
			if err != nil {
				faults = append(faults, fmt.Sprintf("Service %s/%s: annotation %s: %v", sp.svc.Namespace, sp.svc.Name, inject.AnnotationOpaquePorts, err))
				return nil
			}
			svcOpaque = set.Contains(uint16(sp.port.Port))
		}
		if _, meshed := injected(sp.pod); !meshed {
			return nil // no proxy of its own: its clients' proxies decide alone
		}
		// The pod's side, as the destination controller reads it: its
		// annotation, what injection gave its proxy (a workload's
		// annotation), its namespace's; an empty value counts as none.
		// Without one, the pod's endpoints follow the Service, and there
		// is nothing to disagree on.
		var nsAnnotations map[string]string
		if ns := namespaces[sp.pod.Namespace]; ns != nil {
			nsAnnotations = ns.Annotations
		}
		var podSet ports.Set
		where := ""
		for _, layer := range []struct {
			value string
			name  string
		}{
			{sp.pod.Annotations[inject.AnnotationOpaquePorts], "its annotation"},
			{proxyEnv(sp.pod, inject.EnvOpaquePorts), "its proxy's " + inject.EnvOpaquePorts},
			{nsAnnotations[inject.AnnotationOpaquePorts], "its namespace's annotation"},
		} {
			if layer.value == "" {
				continue
			}
			set, err := ports.Parse(layer.value)
			if err != nil {
				faults = append(faults, fmt.Sprintf("%s: %s %s: %v", podName(sp.pod), layer.name, inject.AnnotationOpaquePorts, err))
				return nil
			}
			podSet, where = set, layer.name
			break
		}
		if where == "" {
			return nil
		}
		podOpaque := podSet.Contains(sp.target)
		switch {
		case svcOpaque && !podOpaque:
			faults = append(faults, fmt.Sprintf("%s: opaque on the Service, but target port %d is not opaque on the pod (%s)", sp, sp.target, where))
		case !svcOpaque && podOpaque:
			faults = append(faults, fmt.Sprintf("%s: target port %d is opaque on the pod (%s), but the Service port is not", sp, sp.target, where))
		}
		return nil
	})
	return faults, err
}

// checkTargetPorts finds Service ports whose target port no app container
// of a selected pod declares: a named one the pod lacks gets no endpoint,
// and an undeclared number is one nothing says the pod serves.
func checkTargetPorts(ctx context.Context, c *cluster) ([]string, error) {
	var faults []string
	err := c.servicePorts(ctx, func(sp servicePort) error {
		if sp.target == 0 {
			faults = append(faults, fmt.Sprintf("%s: no container port named %q", sp, sp.port.TargetPort.StrVal))
			return nil
		}
		for _, ctr := range appContainers(sp.pod) {
			for _, cp := range ctr.Ports {
				if uint16(cp.ContainerPort) == sp.target && (cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP) {
					return nil
				}
			}
		}
		faults = append(faults, fmt.Sprintf("%s: no container declares port %d", sp, sp.target))
		return nil
	})
	return faults, err
}

// checkNetworkPolicies runs netpol's check on the cluster's live
// Namespaces, Pods, Services and NetworkPolicies, in its controller mode
// when the destination controller is installed.
func checkNetworkPolicies(ctx context.Context, c *cluster) ([]string, error) {
	namespaces, err := c.listNamespaces(ctx)
	if err != nil {
		return nil, err
	}
	pods, err := c.listPods(ctx)
	if err != nil {
		return nil, err
	}
	services, err := c.listServices(ctx)
	if err != nil {
		return nil, err
	}
	policies, err := c.listNetworkPolicies(ctx)
	if err != nil {
		return nil, err
	}
	var stream bytes.Buffer
	add := func(apiVersion, kind string, obj interface {
		metav1.Object
		schema.ObjectKind
	}) error {
		obj.SetManagedFields(nil)
		obj.SetGroupVersionKind(schema.FromAPIVersionAndKind(apiVersion, kind))
		y, err := manifest.Encode(obj)
		if err != nil {
			return err
		}
		stream.WriteString("---\n")
		stream.Write(y)
		return nil
	}
	for _, ns := range namespaces {
		if err := add("v1", "Namespace", ns); err != nil {
			return nil, err
		}
	}
	for i := range pods {
		if err := add("v1", "Pod", &pods[i]); err != nil {
			return nil, err
		}
	}
	for i := range services {
		if err := add("v1", "Service", &services[i]); err != nil {
			return nil, err
		}
	}
	for i := range policies {
		if err := add("networking.k8s.io/v1", "NetworkPolicy", &policies[i]); err != nil {
			return nil, err
		}
	}
	o := netpol.DefaultOptions()
	if o.DefaultOpaque, err = c.defaultOpaque(ctx); err != nil {
		return nil, err
	}
	_, err = c.client.AppsV1().Deployments(c.o.Namespace).Get(ctx, install.DestinationName, metav1.GetOptions{})
	switch {
	case err == nil:
		o.Controller = true
	case !apierrors.IsNotFound(err):
		return nil, err
	}
	rep, err := netpol.Check([]netpol.Input{{Name: "cluster", Data: stream.Bytes()}}, o)
	if err != nil {
		return nil, err
	}
	var faults []string
	for _, p := range rep.Problems {
		faults = append(faults, strings.TrimPrefix(p.String(), "cluster: "))
	}
	return faults, nil
}

// proxyEnv is the value of the pod's proxy container's variable name, or "".
func proxyEnv(p *corev1.Pod, name string) string {
	for _, list := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, ctr := range list {
			if ctr.Name != inject.ProxyContainerName {
				continue
			}
			for _, e := range ctr.Env {
				if e.Name == name {
					return e.Value
				}
			}
		}
	}
	return ""
}
