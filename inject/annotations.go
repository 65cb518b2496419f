package inject

import (
	"fmt"
	"strings"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/ports"
)

// Annotations read from a pod template, its workload or its namespace, in
// that order of precedence. They mirror Linkerd's names under meshproxy's
// prefix.
const (
	// AnnotationInject is "enabled" or "disabled".
	AnnotationInject = "meshproxy.io/inject"
	// AnnotationOpaquePorts lists the pod's ports carried as opaque TCP,
	// e.g. "6379,16379" or "4000-4100"; it replaces the default list.
	AnnotationOpaquePorts = "config.meshproxy.io/opaque-ports"
	// AnnotationSkipInboundPorts lists ports whose inbound traffic bypasses
	// the proxy.
	AnnotationSkipInboundPorts = "config.meshproxy.io/skip-inbound-ports"
	// AnnotationSkipOutboundPorts lists destination ports whose outbound
	// traffic bypasses the proxy.
	AnnotationSkipOutboundPorts = "config.meshproxy.io/skip-outbound-ports"
	// AnnotationProxyLogLevel is the proxy's log level.
	AnnotationProxyLogLevel = "config.meshproxy.io/proxy-log-level"
	// AnnotationMeshedNetworks lists the CIDRs whose destinations the
	// proxy takes to be meshed, e.g. "10.0.0.0/8,fd00::/8"; it replaces
	// the injector's list (Config.MeshedNetworks), and "" sets none.
	AnnotationMeshedNetworks = "config.meshproxy.io/meshed-networks"

	// AnnotationInjected is set by injection on the pods it changes, with
	// the image injected, and removed by uninjection.
	AnnotationInjected = "meshproxy.io/injected"
)

// Values of AnnotationInject.
const (
	Enabled  = "enabled"
	Disabled = "disabled"
)

// Scope carries the annotations that apply to one pod, each layer
// overriding the next.
type Scope struct {
	Pod       map[string]string // the pod or pod template
	Workload  map[string]string // the Deployment, StatefulSet, … (nil for a bare pod)
	Namespace map[string]string // the pod's namespace, when known
}

// Lookup returns the value of annotation key from the closest layer that
// sets it.
func (s Scope) Lookup(key string) (string, bool) {
	for _, m := range []map[string]string{s.Pod, s.Workload, s.Namespace} {
		if v, ok := m[key]; ok {
			return v, true
		}
	}
	return "", false
}

// Ports parses the port-list annotation key; a missing annotation is the
// empty set and ok false.
func (s Scope) Ports(key string) (set ports.Set, ok bool, err error) {
	v, ok := s.Lookup(key)
	if !ok {
		return ports.Set{}, false, nil
	}
	set, err = ports.Parse(v)
	if err != nil {
		return ports.Set{}, true, fmt.Errorf("%w: annotation %s: %w", ErrBadAnnotation, key, err)
	}
	return set, true, nil
}

// InjectValue returns AnnotationInject's value, checked.
func (s Scope) InjectValue() (string, error) {
	v, ok := s.Lookup(AnnotationInject)
	switch {
	case !ok:
		return "", nil
	case v == Enabled || v == Disabled:
		return v, nil
	default:
		return "", fmt.Errorf("%w: %s=%q (want %s or %s)", ErrBadAnnotation, AnnotationInject, v, Enabled, Disabled)
	}
}

// settings are the per-pod values injection derives from annotations.
type settings struct {
	opaque       ports.Set
	opaqueSet    bool
	skipInbound  ports.Set
	skipOutbound ports.Set
	logLevel     string
	meshedNets   []string
}

func (s Scope) settings(cfg *Config) (settings, error) {
	var out settings
	var err error
	if out.opaque, out.opaqueSet, err = s.Ports(AnnotationOpaquePorts); err != nil {
		return out, err
	}
	if out.skipInbound, _, err = s.Ports(AnnotationSkipInboundPorts); err != nil {
		return out, err
	}
	if out.skipOutbound, _, err = s.Ports(AnnotationSkipOutboundPorts); err != nil {
		return out, err
	}
	out.logLevel = cfg.LogLevel
	if v, ok := s.Lookup(AnnotationProxyLogLevel); ok {
		switch v {
		case "debug", "info", "warn", "error":
			out.logLevel = v
		default:
			return out, fmt.Errorf("%w: %s=%q (want debug, info, warn or error)", ErrBadAnnotation, AnnotationProxyLogLevel, v)
		}
	}
	out.meshedNets = cfg.MeshedNetworks
	if v, ok := s.Lookup(AnnotationMeshedNetworks); ok {
		if out.meshedNets, err = ParseNetworks(v); err != nil {
			return out, fmt.Errorf("%w: %s=%q: %w", ErrBadAnnotation, AnnotationMeshedNetworks, v, err)
		}
	}
	return out, nil
}

// ParseNetworks parses a comma-separated list of CIDRs, as the
// meshed-networks annotation and flag take; spaces around items are
// ignored and an empty list is none.
func ParseNetworks(v string) ([]string, error) {
	var out []string
	for n := range strings.SplitSeq(v, ",") {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		if err := config.CheckNetwork(n); err != nil {
			return nil, fmt.Errorf("meshed network %q: %w", n, err)
		}
		out = append(out, n)
	}
	return out, nil
}
