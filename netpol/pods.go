package netpol

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/internal/manifest"
)

// pod is what the check needs of the pods a workload runs.
type pod struct {
	owner     string // e.g. "StatefulSet cache/redis"
	namespace string
	labels    labels.Set
	meshed    bool
	ports     []corev1.ContainerPort // of all containers, for named ports
}

// namedPort resolves a named port of the pod for protocol.
func (p *pod) namedPort(name string, proto corev1.Protocol) (uint16, bool) {
	for _, cp := range p.ports {
		cpProto := cp.Protocol
		if cpProto == "" {
			cpProto = corev1.ProtocolTCP
		}
		if cp.Name == name && cpProto == proto && cp.ContainerPort > 0 && cp.ContainerPort <= 65535 {
			return uint16(cp.ContainerPort), true
		}
	}
	return 0, false
}

// declares reports whether one of the pod's containers declares TCP port
// port.
func (p *pod) declares(port uint16) bool {
	for _, cp := range p.ports {
		if (cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP) && cp.ContainerPort == int32(port) {
			return true
		}
	}
	return false
}

// newPod describes the pods of workload w, with the annotations of their
// namespace.
func newPod(h manifest.Header, w inject.Workload, defaultNS string, nsAnn map[string]map[string]string, o *Options) (*pod, error) {
	ns := w.Meta.Namespace
	if ns == "" {
		ns = defaultNS
	}
	scope := w.Scope(nsAnn[ns])
	p := &pod{owner: h.String(), namespace: ns, labels: labels.Set(w.PodMeta.Labels)}
	v, err := scope.InjectValue()
	if err != nil {
		return nil, err
	}
	p.meshed = inject.Injected(w.Spec) || v == inject.Enabled || (o.MeshedByDefault && v != inject.Disabled)
	if w.Spec.HostNetwork {
		p.meshed = false
	}
	for _, c := range w.Spec.Containers {
		p.ports = append(p.ports, c.Ports...)
	}
	for _, c := range w.Spec.InitContainers {
		p.ports = append(p.ports, c.Ports...)
	}
	return p, nil
}
