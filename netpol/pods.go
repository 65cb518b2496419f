package netpol

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

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
	ports     []corev1.ContainerPort // of all containers, for named ports
	// opaque are the ports that go to the inbound port with a destination
	// controller: the pod's (or its workload's or namespace's) annotation,
	// else the default list and viaService, the target ports of opaque
	// Service ports.
	opaque, viaService ports.Set
	// annotated: opaque comes from an annotation, which the controller
	// lets decide over the pod's Services.
	annotated bool
}

// retargeted reports whether meshed connections to port travel to the
// inbound port: all of them with meshed networks only, the opaque ones
// with a destination controller.
func (p *pod) retargeted(port uint16, o *Options) bool {
	return !o.Controller || p.opaque.Contains(port) || p.viaService.Contains(port)
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
	if p.opaque, p.annotated, err = scope.Ports(inject.AnnotationOpaquePorts); err != nil {
		return nil, err
	}
	if !p.annotated {
		p.opaque = o.DefaultOpaque
	}
	for _, c := range w.Spec.Containers {
		p.ports = append(p.ports, c.Ports...)
	}
	for _, c := range w.Spec.InitContainers {
		p.ports = append(p.ports, c.Ports...)
	}
	return p, nil
}

// opaqueThroughService adds to the pods svc selects the target ports of
// its opaque ports, as the destination controller rules: the Service's
// opaque-ports annotation names Service ports, and without one the default
// list applies to a Service port or its target port. A pod's own
// annotation decides for it instead.
func opaqueThroughService(svc *corev1.Service, pods []*pod, o *Options) error {
	if len(svc.Spec.Selector) == 0 {
		return nil // its endpoints are not pods known here
	}
	ns := svc.Namespace
	if ns == "" {
		ns = o.Namespace
	}
	annotated, explicit := ports.Set{}, false
	if v, ok := svc.Annotations[inject.AnnotationOpaquePorts]; ok {
		set, err := ports.Parse(v)
		if err != nil {
			return fmt.Errorf("%w: annotation %s: %w", ErrBadManifest, inject.AnnotationOpaquePorts, err)
		}
		annotated, explicit = set, true
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	for _, p := range pods {
		if p.namespace != ns || p.annotated || !sel.Matches(p.labels) {
			continue
		}
		for _, sp := range svc.Spec.Ports {
			if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
				continue
			}
			target, ok := uint16(sp.Port), true
			switch {
			case sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal != "":
				target, ok = p.namedPort(sp.TargetPort.StrVal, corev1.ProtocolTCP)
			case sp.TargetPort.IntVal > 0:
				target = uint16(sp.TargetPort.IntVal)
			}
			if !ok {
				continue
			}
			opaque := annotated.Contains(uint16(sp.Port))
			if !explicit {
				opaque = o.DefaultOpaque.Contains(uint16(sp.Port)) || o.DefaultOpaque.Contains(target)
			}
			if opaque {
				p.viaService.Add(target)
			}
		}
	}
	return nil
}
