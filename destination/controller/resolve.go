package controller

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seed722d2a70/meshproxy/config"
	pb "github.com/seed722d2a70/meshproxy/destination/destinationpb"
	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/ports"
)

// ErrBadAddress is wrapped by parseTarget's errors.
var ErrBadAddress = errors.New("bad address")

// target is a parsed Resolve address: an IP or a Service's name, and a port.
type target struct {
	ip        netip.Addr // valid for "IP:port"
	namespace string     // with name, for "<name>.<namespace>.svc…:port"
	name      string
	port      int32
}

// parseTarget parses "IP:port" or "<service>.<namespace>.svc[.<domain>]:port".
// Another name is not an error: it parses to a target that resolves to
// nothing (the proxy then uses its own configuration).
func parseTarget(addr, clusterDomain string) (target, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return target{}, fmt.Errorf("%w %q: %w", ErrBadAddress, addr, err)
	}
	p, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || p == 0 {
		return target{}, fmt.Errorf("%w %q: port must be 1-65535", ErrBadAddress, addr)
	}
	t := target{port: int32(p)}
	if ip, err := netip.ParseAddr(host); err == nil {
		t.ip = ip.Unmap()
		return t, nil
	}
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	name = strings.TrimSuffix(name, "."+clusterDomain)
	if parts := strings.Split(name, "."); len(parts) == 3 && parts[2] == "svc" && parts[0] != "" && parts[1] != "" {
		t.name, t.namespace = parts[0], parts[1]
	}
	return t, nil
}

// answer is what is at a target: the state a subscription sends.
type answer struct {
	kind      pb.Kind
	service   *pb.Service // nil unless a Service is there
	endpoints map[string]*pb.Endpoint
}

// resolver computes answers from the informers' stores. Answers share
// parts (the port lists' ranges), so nothing may modify one once made.
type resolver struct {
	ix            *index
	trustDomain   string
	defaultOpaque portList
	// proxyDefault is the list a proxy runs with when injection gave it
	// none: config.DefaultOpaquePorts.
	proxyDefault portList
	lists        portLists
}

func newResolver(ix *index, trustDomain string, defaultOpaque ports.Set) *resolver {
	return &resolver{ix: ix, trustDomain: trustDomain, defaultOpaque: newPortList(defaultOpaque),
		proxyDefault: newPortList(ports.MustParse(config.DefaultOpaquePorts))}
}

// resolve returns the answer for t and the keys of every object it read, so
// that a change to any of them recomputes it.
func (r *resolver) resolve(t target) (answer, []key) {
	switch {
	case t.ip.IsValid():
		ip := t.ip.String()
		deps := []key{ipKey(ip)}
		if objs, _ := r.ix.services.GetIndexer().ByIndex(byClusterIP, ip); len(objs) > 0 {
			svc := objs[0].(*corev1.Service)
			return r.service(svc, t.port, family(t.ip), append(deps, serviceKey(svc.Namespace, svc.Name)))
		}
		if pod := r.podAt(ip); pod != nil {
			return r.pod(pod, ip, t.port, deps)
		}
		return answer{kind: pb.Kind_KIND_UNKNOWN}, deps
	case t.name != "":
		deps := []key{serviceKey(t.namespace, t.name)}
		obj, ok, _ := r.ix.services.GetIndexer().GetByKey(t.namespace + "/" + t.name)
		if !ok {
			return answer{kind: pb.Kind_KIND_UNKNOWN}, deps
		}
		return r.service(obj.(*corev1.Service), t.port, "", deps)
	}
	return answer{kind: pb.Kind_KIND_UNKNOWN}, nil
}

// podAt returns the live pod that has ip, preferring one not being deleted:
// for a moment after a pod ends, its IP may be another's too.
func (r *resolver) podAt(ip string) *corev1.Pod {
	objs, _ := r.ix.pods.GetIndexer().ByIndex(byPodIP, ip)
	var found *corev1.Pod
	for _, o := range objs {
		p := o.(*corev1.Pod)
		if found == nil || (found.DeletionTimestamp != nil && p.DeletionTimestamp == nil) {
			found = p
		}
	}
	return found
}

// servicePort returns the Service's TCP port numbered port.
func servicePort(svc *corev1.Service, port int32) (corev1.ServicePort, bool) {
	for _, sp := range svc.Spec.Ports {
		if sp.Port == port && (sp.Protocol == "" || sp.Protocol == corev1.ProtocolTCP) {
			return sp, true
		}
	}
	return corev1.ServicePort{}, false
}

// slicePort returns the port a slice publishes for the Service port named
// name: the targetPort, numeric or named, as resolved for the slice's pods.
func slicePort(s *discoveryv1.EndpointSlice, name string) (int32, bool) {
	for _, p := range s.Ports {
		n := ""
		if p.Name != nil {
			n = *p.Name
		}
		if n == name && p.Port != nil && (p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) {
			return *p.Port, true
		}
	}
	return 0, false
}

// ready reports whether an endpoint may take new connections. A nil
// condition means unknown, which the API says to read as ready.
func ready(c discoveryv1.EndpointConditions) bool {
	return (c.Ready == nil || *c.Ready) && (c.Terminating == nil || !*c.Terminating)
}

// service answers for a Service's port: its profile and its ready endpoints.
func (r *resolver) service(svc *corev1.Service, port int32, family discoveryv1.AddressType, deps []key) (answer, []key) {
	sp, ok := servicePort(svc, port)
	if !ok {
		// Nothing answers a Service address on an undeclared port.
		return answer{kind: pb.Kind_KIND_UNKNOWN}, deps
	}
	deps = append(deps, namespaceKey(svc.Namespace))
	slices, _ := r.ix.slices.GetIndexer().ByIndex(byServiceName, svc.Namespace+"/"+svc.Name)
	type found struct {
		ref  *corev1.ObjectReference
		ip   string
		port int32
	}
	var eps []found
	var targetPorts []int32
	for _, o := range slices {
		s := o.(*discoveryv1.EndpointSlice)
		// A ClusterIP of one family reaches endpoints of that family (a
		// dual-stack Service has a slice per family); a name, either.
		if s.AddressType == discoveryv1.AddressTypeFQDN || (family != "" && s.AddressType != family) {
			continue
		}
		tp, ok := slicePort(s, sp.Name)
		if !ok {
			continue
		}
		targetPorts = append(targetPorts, tp)
		for _, ep := range s.Endpoints {
			if !ready(ep.Conditions) {
				continue
			}
			for _, ip := range ep.Addresses {
				eps = append(eps, found{ep.TargetRef, ip, tp})
			}
		}
	}
	profile := &pb.Service{
		Name: svc.Name, Namespace: svc.Namespace, Port: uint32(port),
		Opaque:   r.serviceOpaque(svc, sp, targetPorts),
		Headless: svc.Spec.ClusterIP == corev1.ClusterIPNone,
	}
	a := answer{kind: pb.Kind_KIND_SERVICE, service: profile, endpoints: make(map[string]*pb.Endpoint, len(eps))}
	for _, f := range eps {
		var pod *corev1.Pod
		if f.ref != nil && f.ref.Kind == "Pod" {
			deps = append(deps, podKey(f.ref.Namespace, f.ref.Name))
			o, ok, _ := r.ix.pods.GetIndexer().GetByKey(f.ref.Namespace + "/" + f.ref.Name)
			if !ok {
				// Left out until the pod arrives (which recomputes the
				// answer): what it says decides whether the endpoint is
				// meshed, and a guess of unmeshed would send plaintext.
				continue
			}
			pod = o.(*corev1.Pod)
			if !podHasIP(pod, f.ip) {
				// A stale slice, or one naming a pod that is not the
				// address's: its identity and sidecar cannot be taken
				// for that address.
				continue
			}
			if pod.Namespace != svc.Namespace {
				deps = append(deps, namespaceKey(pod.Namespace))
			}
		}
		ep := r.endpoint(pod, f.ip, f.port, profile.Opaque)
		a.endpoints[ep.Address] = ep
	}
	return a, deps
}

// podHasIP reports whether ip is one of the addresses the pod's status
// gives it (for a hostNetwork pod, the node's: such an endpoint is
// unmeshed, see readSidecar).
func podHasIP(pod *corev1.Pod, ip string) bool {
	if pod.Status.PodIP == ip {
		return true
	}
	return slices.ContainsFunc(pod.Status.PodIPs, func(p corev1.PodIP) bool { return p.IP == ip })
}

// family is the slice address type of ip.
func family(ip netip.Addr) discoveryv1.AddressType {
	if ip.Is4() {
		return discoveryv1.AddressTypeIPv4
	}
	return discoveryv1.AddressTypeIPv6
}

// serviceOpaque applies the seed's rule for a Service port: the Service's
// opaque-ports annotation decides when there is one; otherwise the default
// list holds the Service port or its target port (so 9090 → 3306 is opaque).
func (r *resolver) serviceOpaque(svc *corev1.Service, sp corev1.ServicePort, targetPorts []int32) bool {
	if v, ok := svc.Annotations[inject.AnnotationOpaquePorts]; ok {
		if l, ok := r.lists.parse(v); ok {
			return l.set.Contains(uint16(sp.Port))
		}
	}
	if r.defaultOpaque.set.Contains(uint16(sp.Port)) {
		return true
	}
	if sp.TargetPort.IntVal > 0 && r.defaultOpaque.set.Contains(uint16(sp.TargetPort.IntVal)) {
		return true
	}
	for _, tp := range targetPorts {
		if r.defaultOpaque.set.Contains(uint16(tp)) {
			return true
		}
	}
	return false
}

// pod answers for a pod's IP: the pod itself, and the headless Service
// that publishes it on that port, if any.
func (r *resolver) pod(pod *corev1.Pod, ip string, port int32, deps []key) (answer, []key) {
	deps = append(deps, podKey(pod.Namespace, pod.Name), namespaceKey(pod.Namespace))
	profile, deps := r.headlessProfile(ip, port, deps)
	opaque := r.defaultOpaque.set.Contains(uint16(port))
	if profile != nil {
		opaque = profile.Opaque
	}
	ep := r.endpoint(pod, ip, port, opaque)
	return answer{kind: pb.Kind_KIND_POD, service: profile, endpoints: map[string]*pb.Endpoint{ep.Address: ep}}, deps
}

// headlessProfile finds a headless Service whose slices publish ip on port.
func (r *resolver) headlessProfile(ip string, port int32, deps []key) (*pb.Service, []key) {
	slices, _ := r.ix.slices.GetIndexer().ByIndex(byAddress, ip)
	for _, o := range slices {
		s := o.(*discoveryv1.EndpointSlice)
		name := s.Labels[discoveryv1.LabelServiceName]
		if name == "" {
			continue
		}
		deps = append(deps, serviceKey(s.Namespace, name))
		obj, ok, _ := r.ix.services.GetIndexer().GetByKey(s.Namespace + "/" + name)
		if !ok {
			continue
		}
		svc := obj.(*corev1.Service)
		if svc.Spec.ClusterIP != corev1.ClusterIPNone {
			continue
		}
		for _, sp := range svc.Spec.Ports {
			if tp, ok := slicePort(s, sp.Name); ok && tp == port {
				return &pb.Service{
					Name: svc.Name, Namespace: svc.Namespace, Port: uint32(sp.Port),
					Opaque: r.serviceOpaque(svc, sp, []int32{tp}), Headless: true,
				}, deps
			}
		}
	}
	return nil, deps
}

// endpoint describes ip:port of pod (nil for an endpoint that is no pod, or
// one the store does not hold yet: then it is unmeshed until the pod
// arrives, which recomputes the answer). serviceOpaque is the Service's
// word, which an annotation on the pod or its namespace overrides.
func (r *resolver) endpoint(pod *corev1.Pod, ip string, port int32, serviceOpaque bool) *pb.Endpoint {
	ep := &pb.Endpoint{Address: net.JoinHostPort(ip, portString(port)), Opaque: serviceOpaque}
	if pod == nil {
		ep.OpaquePorts = r.defaultOpaque.ranges
		return ep
	}
	ep.Pod, ep.Namespace = pod.Name, pod.Namespace
	sc := readSidecar(pod)
	list, explicit := r.opaquePorts(pod.Annotations[inject.AnnotationOpaquePorts], sc.opaquePorts,
		r.namespaceAnnotations(pod.Namespace)[inject.AnnotationOpaquePorts])
	ep.OpaquePorts = list.ranges
	if explicit {
		ep.Opaque = list.set.Contains(uint16(port))
	}
	if sc.meshed && !sc.skipInbound.Contains(uint16(port)) {
		ep.Meshed = true
		ep.InboundPort = uint32(sc.inboundPort)
		ep.Identity = spiffeID(r.trustDomain, pod.Namespace, pod.Spec.ServiceAccountName)
		// A port the pod's own proxy takes as opaque is one it does not
		// sniff when a connection is redirected to it: a peer's mTLS
		// there would reach the app. Whatever the destination declares,
		// such a port is opaque, and its connections go to the inbound
		// port.
		if r.proxyOpaque(sc).set.Contains(uint16(port)) {
			ep.Opaque = true
		}
	}
	return ep
}

// proxyOpaque is the opaque-port list the pod's proxy runs with: what
// injection gave it, else the proxy's own default list (not the
// controller's, which -opaque-ports may have changed).
func (r *resolver) proxyOpaque(sc sidecar) portList {
	if sc.opaquePorts != "" {
		if l, ok := r.lists.parse(sc.opaquePorts); ok {
			return l
		}
	}
	return r.proxyDefault
}

func (r *resolver) namespaceAnnotations(ns string) map[string]string {
	o, ok, _ := r.ix.namespaces.GetIndexer().GetByKey(ns)
	if !ok {
		return nil
	}
	if m, ok := o.(metav1.Object); ok {
		return m.GetAnnotations()
	}
	return nil
}

// opaquePorts returns the first opaque-ports list given (non-empty
// values, closest layer first: the pod's annotation, what injection gave
// its proxy, which includes the workload's annotation, then the
// namespace's annotation), with explicit true, or the default list. A
// malformed value counts as absent; an annotation is logged and counted
// when its object changes (Controller.notify), not on every answer.
func (r *resolver) opaquePorts(values ...string) (list portList, explicit bool) {
	for _, v := range values {
		if v == "" {
			continue
		}
		if l, ok := r.lists.parse(v); ok {
			return l, true
		}
	}
	return r.defaultOpaque, false
}

// portList is a set of ports and its ranges as endpoints carry them. The
// ranges are shared by every endpoint with that list.
type portList struct {
	set    ports.Set
	ranges []*pb.PortRange
}

func newPortList(s ports.Set) portList { return portList{set: s, ranges: portRanges(s)} }

func portRanges(s ports.Set) []*pb.PortRange {
	rs := s.Ranges()
	out := make([]*pb.PortRange, len(rs))
	for i, r := range rs {
		out[i] = &pb.PortRange{First: uint32(r[0]), Last: uint32(r[1])}
	}
	return out
}

// maxPortLists bounds portLists: a cluster holds few distinct annotation
// values, so past this many something churns them, and the cache starts
// over rather than grow.
const maxPortLists = 1024

// portLists remembers the opaque-ports annotation values parsed so far,
// malformed ones included: every endpoint of every answer reads one, and
// parsing allocates the set's 8 KiB.
type portLists struct {
	mu sync.Mutex
	m  map[string]parsedList
}

type parsedList struct {
	list portList
	ok   bool
}

// parse returns the list v names, and false when v is malformed.
func (l *portLists) parse(v string) (portList, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p, found := l.m[v]; found {
		return p.list, p.ok
	}
	var p parsedList
	if set, err := ports.Parse(v); err == nil {
		p = parsedList{list: newPortList(set), ok: true}
	}
	if l.m == nil || len(l.m) >= maxPortLists {
		l.m = map[string]parsedList{}
	}
	l.m[v] = p
	return p.list, p.ok
}
