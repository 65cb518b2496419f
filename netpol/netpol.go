// Package netpol finds NetworkPolicies that would drop meshed traffic.
//
// A meshed client's proxy carries connections to a meshed pod to the pod's
// inbound proxy port (4143), with the original port inside the mTLS
// stream. Which connections depends on the mode:
//
//   - With a destination controller (the seed's model), only opaque ones:
//     ports the pod's Services declare opaque (their opaque-ports
//     annotation, or the default list on the Service port or its target
//     port), or that the pod's own annotation or the default list names.
//     HTTP and every other port keep their port.
//   - With meshed networks only, every connection, HTTP included: a proxy
//     without a controller cannot know which ports the server treats as
//     opaque.
//
// A NetworkPolicy is enforced on the packets' real destination port, so an
// ingress rule admitting, say, Redis on 6379 but not 4143 drops every
// meshed connection to it; so does an egress rule of a meshed client
// admitting 6379 toward meshed Redis pods, since its proxy connects to
// their 4143. Check reports such rules and can add the inbound port (and,
// when asked, the admin port) to them.
package netpol

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/internal/manifest"
	"github.com/seed722d2a70/meshproxy/ports"
)

// ErrBadManifest is returned (wrapped) for input that cannot be checked.
var ErrBadManifest = errors.New("bad manifest")

// Options configures Check. The zero value is not useful: start from
// DefaultOptions.
type Options struct {
	// InboundPort and AdminPort are the proxy's ports.
	InboundPort uint16
	AdminPort   uint16
	// Fix adds InboundPort to the rules found, and AdminPort too when
	// AllowAdmin is set.
	Fix        bool
	AllowAdmin bool
	// MeshedByDefault counts every pod not annotated disabled as meshed,
	// for manifests checked before `meshproxy inject` runs over them.
	MeshedByDefault bool
	// Namespace is the namespace of objects that name none.
	Namespace string
	// Controller checks for proxies that resolve destinations with the
	// destination controller: only opaque ports travel to InboundPort.
	// False checks for meshed networks only, where every port does.
	Controller bool
	// DefaultOpaque are the ports opaque where no annotation says
	// otherwise, for Controller.
	DefaultOpaque ports.Set
}

// DefaultOptions returns the options of `meshproxy netpol` without flags.
func DefaultOptions() Options {
	return Options{
		InboundPort:   config.DefaultInboundPort,
		AdminPort:     config.DefaultAdminPort,
		Namespace:     "default",
		DefaultOpaque: ports.MustParse(config.DefaultOpaquePorts),
	}
}

// Input is one file of manifests.
type Input struct {
	Name string
	Data []byte
}

// Problem is one rule admitting ports of meshed pods but not the inbound
// proxy port: an ingress rule of the pods themselves, or an egress rule of
// meshed clients reaching them.
type Problem struct {
	File      string
	Policy    string // "namespace/name"
	Direction networkingv1.PolicyType
	Rule      int // index in spec.ingress or spec.egress, from 0
	// Pods names the workloads whose pods the rule admits ports of (for
	// egress, as destinations), and Ports those ports (the admin port
	// aside).
	Pods  []string
	Ports ports.Set
	// InboundPort is the port the rule lacks.
	InboundPort uint16
	// Controller: the ports are opaque ones, with a destination controller.
	Controller bool
	Fixed      bool
}

// String describes the problem for a person.
func (p Problem) String() string {
	kind, conns := "port(s)", "connections"
	if p.Controller {
		kind, conns = "opaque port(s)", "opaque connections"
	}
	s := fmt.Sprintf("%s: NetworkPolicy %s: ingress rule %d admits %s %s of %s but not %d, where meshed %s to them arrive",
		p.File, p.Policy, p.Rule+1, kind, p.Ports.String(), strings.Join(p.Pods, ", "), p.InboundPort, conns)
	if p.Direction == networkingv1.PolicyTypeEgress {
		s = fmt.Sprintf("%s: NetworkPolicy %s: egress rule %d admits %s %s of %s but not %d, where the meshed clients' %s to them go",
			p.File, p.Policy, p.Rule+1, kind, p.Ports.String(), strings.Join(p.Pods, ", "), p.InboundPort, conns)
	}
	if p.Fixed {
		s += " (fixed)"
	}
	return s
}

// Report is the result of Check.
type Report struct {
	Problems []Problem
	// Outputs holds the inputs with the fixes applied, in input order; an
	// input with nothing fixed is returned unchanged.
	Outputs [][]byte
}

// Unfixed reports whether problems remain.
func (r *Report) Unfixed() bool {
	for _, p := range r.Problems {
		if !p.Fixed {
			return true
		}
	}
	return false
}

// Check reads NetworkPolicies, workloads and Namespaces from the inputs,
// which may refer to each other across files, and reports every ingress
// rule that admits a port of a meshed pod but not the inbound proxy port,
// and every egress rule of meshed pods that admits a port of a meshed pod
// it reaches but not the inbound port (see checkEgress); with o.Fix it adds
// the port. A rule admitting only the admin port (for scrapers outside the
// mesh) is left alone. Objects inside v1 Lists
// (what kubectl get -o yaml prints) count like any other.
func Check(inputs []Input, o Options) (*Report, error) {
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	files := make([][]manifest.Doc, len(inputs))
	var objs []*object
	for i, in := range inputs {
		docs, err := manifest.Read(bytes.NewReader(in.Data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", in.Name, err)
		}
		files[i] = docs
		for j := range docs {
			found, err := objects(in.Name, &docs[j], j)
			if err != nil {
				return nil, err
			}
			objs = append(objs, found...)
		}
	}
	nsAnn := map[string]map[string]string{}
	nsLabels := map[string]labels.Set{}
	for _, ob := range objs {
		if ob.h.GVK() == "v1/Namespace" {
			nsAnn[ob.h.Metadata.Name] = ob.h.Metadata.Annotations
			nsLabels[ob.h.Metadata.Name] = ob.h.Metadata.Labels
		}
	}
	var pods []*pod
	for _, ob := range objs {
		w, ok := inject.NewWorkload(ob.h.GVK())
		if !ok {
			continue
		}
		if err := manifest.DecodeStrict(ob.body, w.Object); err != nil {
			return nil, ob.wrap(err)
		}
		p, err := newPod(ob.h, w, o.Namespace, nsAnn, &o)
		if err != nil {
			return nil, ob.wrap(err)
		}
		pods = append(pods, p)
	}
	if o.Controller {
		for _, ob := range objs {
			if ob.h.GVK() != "v1/Service" {
				continue
			}
			var svc corev1.Service
			if err := manifest.DecodeStrict(ob.body, &svc); err != nil {
				return nil, ob.wrap(err)
			}
			if err := opaqueThroughService(&svc, pods, &o); err != nil {
				return nil, ob.wrap(err)
			}
		}
	}

	rep := &Report{}
	for _, ob := range objs {
		if ob.h.GVK() != "networking.k8s.io/v1/NetworkPolicy" {
			continue
		}
		var np networkingv1.NetworkPolicy
		if err := manifest.DecodeStrict(ob.body, &np); err != nil {
			return nil, ob.wrap(err)
		}
		problems, err := checkPolicy(&np, pods, nsLabels, &o)
		if err != nil {
			return nil, ob.wrap(err)
		}
		for k := range problems {
			problems[k].File = ob.file
		}
		rep.Problems = append(rep.Problems, problems...)
		if o.Fix && len(problems) > 0 {
			if err := ob.replace(&np); err != nil {
				return nil, ob.wrap(err)
			}
		}
	}
	for i := range files {
		var out bytes.Buffer
		if err := manifest.Write(&out, files[i]); err != nil {
			return nil, err
		}
		rep.Outputs = append(rep.Outputs, out.Bytes())
	}
	return rep, nil
}

// object is one Kubernetes object of the input: a document, or an item of
// a document's v1 List.
type object struct {
	h    manifest.Header
	body []byte
	file string
	at   string // where in the file, for errors
	// replace writes obj back in the object's place.
	replace func(obj any) error
}

func (ob *object) wrap(err error) error {
	return fmt.Errorf("%s: %s (%s): %w", ob.file, ob.at, ob.h, err)
}

// objects returns the objects of document j of file: the document, or the
// items of its List, whose replacements re-encode the List.
func objects(file string, d *manifest.Doc, j int) ([]*object, error) {
	h, err := manifest.ReadHeader(d.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: document %d: %w", file, j+1, err)
	}
	doc := &object{h: h, body: d.Body, file: file, at: fmt.Sprintf("document %d", j+1)}
	doc.replace = func(obj any) error {
		body, err := manifest.Encode(obj)
		if err == nil {
			d.Body = body
		}
		return err
	}
	if h.GVK() != "v1/List" {
		return []*object{doc}, nil
	}
	list := &corev1.List{}
	if err := manifest.DecodeStrict(d.Body, list); err != nil {
		return nil, doc.wrap(err)
	}
	items := make([]*object, 0, len(list.Items))
	for k, item := range list.Items {
		ih, err := manifest.ReadHeader(item.Raw)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d item %d: %w", file, j+1, k+1, err)
		}
		items = append(items, &object{
			h: ih, body: item.Raw, file: file, at: fmt.Sprintf("document %d item %d", j+1, k+1),
			replace: func(obj any) error {
				raw, err := manifest.EncodeJSON(obj)
				if err != nil {
					return err
				}
				list.Items[k].Raw, list.Items[k].Object = raw, nil
				return doc.replace(list)
			},
		})
	}
	return items, nil
}

// checkPolicy checks (and with o.Fix, fixes in place) one policy.
func checkPolicy(np *networkingv1.NetworkPolicy, pods []*pod, nsLabels map[string]labels.Set, o *Options) ([]Problem, error) {
	ns := np.Namespace
	if ns == "" {
		ns = o.Namespace
	}
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		return nil, fmt.Errorf("%w: podSelector: %w", ErrBadManifest, err)
	}
	var selected []*pod
	for _, p := range pods {
		if p.namespace == ns && p.meshed && sel.Matches(p.labels) {
			selected = append(selected, p)
		}
	}
	if len(selected) == 0 {
		return nil, nil
	}
	var problems []Problem
	if restricts(np, networkingv1.PolicyTypeEgress) {
		var err error
		if problems, err = checkEgress(np, ns, pods, nsLabels, o); err != nil {
			return nil, err
		}
	}
	if !restricts(np, networkingv1.PolicyTypeIngress) {
		return problems, nil
	}
	for r := range np.Spec.Ingress {
		rule := &np.Spec.Ingress[r]
		if len(rule.Ports) == 0 {
			continue // every port is admitted
		}
		prob := Problem{Policy: ns + "/" + np.Name, Direction: networkingv1.PolicyTypeIngress, Rule: r, InboundPort: o.InboundPort, Controller: o.Controller}
		for _, p := range selected {
			prob.add(rule.Ports, p, o, func(port uint16) bool { return p.retargeted(port, o) })
		}
		if len(prob.Pods) == 0 {
			continue
		}
		if o.Fix {
			rule.Ports = append(rule.Ports, tcpPort(o.InboundPort))
			if o.AllowAdmin {
				if admitted, all := admittedPorts(rule.Ports, selected[0]); !all && !admitted.Contains(o.AdminPort) {
					rule.Ports = append(rule.Ports, tcpPort(o.AdminPort))
				}
			}
			prob.Fixed = true
		}
		problems = append(problems, prob)
	}
	return problems, nil
}

// add adds to the problem pod p and the ports of p that a rule's port list
// admits, unless it admits every port or the inbound port; the admin port
// and ports that relevant refuses are left out.
func (prob *Problem) add(list []networkingv1.NetworkPolicyPort, p *pod, o *Options, relevant func(uint16) bool) {
	admitted, all := admittedPorts(list, p)
	if all || admitted.Contains(o.InboundPort) {
		return
	}
	hit := false
	for _, rg := range admitted.Ranges() {
		for port := int(rg[0]); port <= int(rg[1]); port++ {
			if uint16(port) != o.AdminPort && relevant(uint16(port)) {
				prob.Ports.Add(uint16(port))
				hit = true
			}
		}
	}
	if hit && !slices.Contains(prob.Pods, p.owner) { // a workload may come twice, from two files
		prob.Pods = append(prob.Pods, p.owner)
	}
}

func tcpPort(p uint16) networkingv1.NetworkPolicyPort {
	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(int32(p))
	return networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &port}
}

// restricts reports whether the policy restricts traffic of type t:
// policyTypes lists it, or is empty, when Kubernetes implies Ingress, and
// Egress if there are egress rules.
func restricts(np *networkingv1.NetworkPolicy, t networkingv1.PolicyType) bool {
	if len(np.Spec.PolicyTypes) == 0 {
		return t == networkingv1.PolicyTypeIngress || len(np.Spec.Egress) > 0
	}
	return slices.Contains(np.Spec.PolicyTypes, t)
}

// checkEgress checks (and with o.Fix, fixes) the egress rules of a policy
// selecting meshed pods. Their proxies connect to meshed destinations on
// the inbound port, so a rule admitting ports of meshed pods it reaches
// must admit the inbound port too. A rule reaching everywhere (no to) is
// held against the ports meshed pods declare, so that, say, DNS to
// anywhere is not reported; peers given by ipBlock reach no pod known
// here.
func checkEgress(np *networkingv1.NetworkPolicy, ns string, pods []*pod, nsLabels map[string]labels.Set, o *Options) ([]Problem, error) {
	var problems []Problem
	for r := range np.Spec.Egress {
		rule := &np.Spec.Egress[r]
		if len(rule.Ports) == 0 {
			continue // every port is admitted
		}
		dests, anywhere, err := reached(rule.To, ns, pods, nsLabels)
		if err != nil {
			return nil, err
		}
		prob := Problem{Policy: ns + "/" + np.Name, Direction: networkingv1.PolicyTypeEgress, Rule: r, InboundPort: o.InboundPort, Controller: o.Controller}
		for _, p := range dests {
			prob.add(rule.Ports, p, o, func(port uint16) bool { return (!anywhere || p.declares(port)) && p.retargeted(port, o) })
		}
		if len(prob.Pods) == 0 {
			continue
		}
		if o.Fix {
			rule.Ports = append(rule.Ports, tcpPort(o.InboundPort))
			prob.Fixed = true
		}
		problems = append(problems, prob)
	}
	return problems, nil
}

// reached returns the meshed pods that an egress rule's peers select in
// policy namespace ns; anywhere reports a rule without peers, which
// reaches every pod.
func reached(peers []networkingv1.NetworkPolicyPeer, ns string, pods []*pod, nsLabels map[string]labels.Set) (dests []*pod, anywhere bool, err error) {
	if len(peers) == 0 {
		for _, p := range pods {
			if p.meshed {
				dests = append(dests, p)
			}
		}
		return dests, true, nil
	}
	seen := map[*pod]bool{}
	for _, peer := range peers {
		if peer.IPBlock != nil {
			continue
		}
		podSel, nsSel := labels.Everything(), labels.Selector(nil)
		if peer.PodSelector != nil {
			if podSel, err = metav1.LabelSelectorAsSelector(peer.PodSelector); err != nil {
				return nil, false, fmt.Errorf("%w: egress podSelector: %w", ErrBadManifest, err)
			}
		}
		if peer.NamespaceSelector != nil {
			if nsSel, err = metav1.LabelSelectorAsSelector(peer.NamespaceSelector); err != nil {
				return nil, false, fmt.Errorf("%w: egress namespaceSelector: %w", ErrBadManifest, err)
			}
		}
		for _, p := range pods {
			inNS := p.namespace == ns
			if nsSel != nil {
				inNS = nsSel.Matches(namespaceLabels(p.namespace, nsLabels))
			}
			if p.meshed && inNS && podSel.Matches(p.labels) && !seen[p] {
				seen[p] = true
				dests = append(dests, p)
			}
		}
	}
	return dests, false, nil
}

// namespaceLabels returns a namespace's labels as its Namespace object in
// the inputs gives them, with the name label Kubernetes sets on every
// namespace.
func namespaceLabels(name string, nsLabels map[string]labels.Set) labels.Set {
	l := labels.Set{"kubernetes.io/metadata.name": name}
	for k, v := range nsLabels[name] {
		l[k] = v
	}
	return l
}

// admittedPorts returns the TCP ports of pod p a rule's port list admits;
// all is true when an entry admits every port.
func admittedPorts(list []networkingv1.NetworkPolicyPort, p *pod) (set ports.Set, all bool) {
	for _, np := range list {
		proto := corev1.ProtocolTCP
		if np.Protocol != nil {
			proto = *np.Protocol
		}
		if proto != corev1.ProtocolTCP {
			continue
		}
		switch {
		case np.Port == nil:
			return set, true
		case np.Port.Type == intstr.String:
			// A named port admits the port of that name on each pod;
			// endPort is not allowed with it.
			if port, ok := p.namedPort(np.Port.StrVal, proto); ok {
				set.Add(port)
			}
		default:
			lo, hi := np.Port.IntVal, np.Port.IntVal
			if np.EndPort != nil && *np.EndPort > lo {
				hi = *np.EndPort
			}
			for port := max(lo, 1); port <= min(hi, 65535); port++ {
				set.Add(uint16(port))
			}
		}
	}
	return set, false
}
