package controller

import (
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/ports"
)

// sidecar is what an injected pod's proxy was set up with, read back from
// the containers injection wrote (see package inject).
type sidecar struct {
	meshed      bool
	inboundPort uint16
	// skipInbound are ports whose connections reach the app without the
	// proxy: a peer's mTLS there would meet the app, so they are not meshed.
	skipInbound ports.Set
	// opaquePorts is the list injection gave the proxy
	// (MESHPROXY_OPAQUE_PORTS: the pod's, workload's or namespace's
	// annotation at injection), or "".
	opaquePorts string
}

func isMeshproxyContainer(name string) bool {
	return name == inject.ProxyContainerName || name == inject.InitContainerName
}

// readSidecar reports whether pod runs an injected proxy, and its settings.
// A pod counts as meshed only when injection marked it and its proxy
// container is there: the annotation alone may outlive an uninjection done
// by hand.
func readSidecar(pod *corev1.Pod) sidecar {
	if _, ok := pod.Annotations[inject.AnnotationInjected]; !ok || pod.Spec.HostNetwork {
		// A hostNetwork pod's proxy would not get its own traffic.
		return sidecar{}
	}
	s := sidecar{inboundPort: config.DefaultInboundPort}
	// The proxy is a native sidecar (an init container that keeps running)
	// or an ordinary container; the init step is always an init container.
	for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
		switch c.Name {
		case inject.ProxyContainerName:
			s.meshed = true
			for _, e := range c.Env {
				if e.Name == inject.EnvOpaquePorts {
					s.opaquePorts = e.Value
				}
			}
			for _, p := range c.Ports {
				if p.Name == inject.PortNameInbound && p.ContainerPort > 0 && p.ContainerPort <= 65535 {
					s.inboundPort = uint16(p.ContainerPort)
				}
			}
		case inject.InitContainerName:
			for _, a := range c.Args {
				if v, ok := strings.CutPrefix(a, "--skip-inbound-ports="); ok {
					// Injection wrote it; a value it could not have
					// written leaves the ports meshed.
					s.skipInbound, _ = ports.Parse(v)
				}
			}
		}
	}
	return s
}

// spiffeID is the SPIRE convention for a Kubernetes workload's identity.
func spiffeID(trustDomain, namespace, serviceAccount string) string {
	if serviceAccount == "" {
		serviceAccount = "default"
	}
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}

// portString is p in decimal, for addresses.
func portString(p int32) string { return strconv.Itoa(int(p)) }
