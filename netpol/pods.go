package netpol

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/internal/manifest"
	"github.com/seed722d2a70/meshproxy/ports"
)

// pod is what the check needs of the pods a workload runs.
type pod struct {
	owner     string // e.g. "StatefulSet cache/redis"
	namespace string
	labels    labels.Set
	meshed    bool
	opaque    ports.Set
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
	set, ok, err := scope.Ports(inject.AnnotationOpaquePorts)
	if err != nil {
		return nil, err
	}
	if !ok {
		set = o.DefaultOpaquePorts
	}
	p.opaque = clone(set) // Service annotations add to it
	for _, c := range w.Spec.Containers {
		p.ports = append(p.ports, c.Ports...)
	}
	for _, c := range w.Spec.InitContainers {
		p.ports = append(p.ports, c.Ports...)
	}
	return p, nil
}

// addServiceOpaquePorts marks as opaque, on the pods svc selects, the
// target ports of the service ports svc's opaque-ports annotation lists.
func addServiceOpaquePorts(svc *corev1.Service, defaultNS string, pods []*pod) error {
	v, ok := svc.Annotations[inject.AnnotationOpaquePorts]
	if !ok || len(svc.Spec.Selector) == 0 {
		return nil
	}
	listed, err := ports.Parse(v)
	if err != nil {
		return fmt.Errorf("%w: Service %s: %s: %w", ErrBadManifest, svc.Name, inject.AnnotationOpaquePorts, err)
	}
	ns := svc.Namespace
	if ns == "" {
		ns = defaultNS
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	for _, p := range pods {
		if p.namespace != ns || !sel.Matches(p.labels) {
			continue
		}
		for _, sp := range svc.Spec.Ports {
			if sp.Port <= 0 || sp.Port > 65535 || !listed.Contains(uint16(sp.Port)) {
				continue
			}
			proto := sp.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			switch {
			case sp.TargetPort.StrVal != "":
				if port, ok := p.namedPort(sp.TargetPort.StrVal, proto); ok {
					p.opaque.Add(port)
				}
			case sp.TargetPort.IntVal > 0 && sp.TargetPort.IntVal <= 65535:
				p.opaque.Add(uint16(sp.TargetPort.IntVal))
			default: // no targetPort: the same as port
				p.opaque.Add(uint16(sp.Port))
			}
		}
	}
	return nil
}

// clone returns a copy of s that can be added to without changing s.
func clone(s ports.Set) ports.Set {
	var c ports.Set
	for _, r := range s.Ranges() {
		for p := int(r[0]); p <= int(r[1]); p++ {
			c.Add(uint16(p))
		}
	}
	return c
}
