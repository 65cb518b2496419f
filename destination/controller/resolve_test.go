package controller

import (
	"errors"
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	pb "github.com/seed722d2a70/meshproxy/destination/destinationpb"
	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/ports"
)

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want target
		err  bool
	}{
		{in: "10.96.0.10:6380", want: target{ip: netip.MustParseAddr("10.96.0.10"), port: 6380}},
		{in: "[fd00::a]:80", want: target{ip: netip.MustParseAddr("fd00::a"), port: 80}},
		{in: "[::ffff:10.1.2.3]:80", want: target{ip: netip.MustParseAddr("10.1.2.3"), port: 80}},
		{in: "redis.shop.svc.cluster.local:6380", want: target{namespace: "shop", name: "redis", port: 6380}},
		{in: "Redis.Shop.svc.cluster.local.:6380", want: target{namespace: "shop", name: "redis", port: 6380}},
		{in: "redis.shop.svc:6380", want: target{namespace: "shop", name: "redis", port: 6380}},
		{in: "example.com:443", want: target{port: 443}},      // not a Service name: unknown
		{in: "redis.shop:6380", want: target{port: 6380}},     // ambiguous without .svc
		{in: "redis.shop.svc.other:1", want: target{port: 1}}, // another cluster domain
		{in: "10.0.0.1", err: true},
		{in: "10.0.0.1:0", err: true},
		{in: "10.0.0.1:65536", err: true},
		{in: "10.0.0.1:http", err: true},
	} {
		got, err := parseTarget(tc.in, DefaultClusterDomain)
		if tc.err {
			if !errors.Is(err, ErrBadAddress) {
				t.Errorf("parseTarget(%q) error = %v, want ErrBadAddress", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseTarget(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestServiceOpaque(t *testing.T) {
	r := newResolver(nil, "", ports.MustParse("3306,6379"))
	svc := func(annotation string, port int32, target intstr.IntOrString) (*corev1.Service, corev1.ServicePort) {
		s := &corev1.Service{}
		if annotation != "-" {
			s.Annotations = map[string]string{inject.AnnotationOpaquePorts: annotation}
		}
		return s, corev1.ServicePort{Port: port, TargetPort: target}
	}
	for _, tc := range []struct {
		name       string
		annotation string // "-": none
		port       int32
		target     intstr.IntOrString
		published  []int32 // target ports the slices publish
		want       bool
	}{
		{"default list, service port", "-", 3306, intstr.FromInt32(13306), nil, true},
		{"default list through a numeric targetPort", "-", 9090, intstr.FromInt32(3306), nil, true},
		{"default list through a named targetPort", "-", 9090, intstr.FromString("db"), []int32{3306}, true},
		{"neither in the default list", "-", 80, intstr.FromInt32(8080), []int32{8080}, false},
		{"annotation names the service port", "4222", 4222, intstr.FromInt32(4222), nil, true},
		{"annotation replaces the default list", "4222", 6379, intstr.FromInt32(6379), nil, false},
		{"annotation none", "none", 3306, intstr.FromInt32(3306), nil, false},
		{"malformed annotation is ignored", "x", 3306, intstr.FromInt32(3306), nil, true},
	} {
		s, sp := svc(tc.annotation, tc.port, tc.target)
		if got := r.serviceOpaque(s, sp, tc.published); got != tc.want {
			t.Errorf("%s: opaque = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestReadSidecar(t *testing.T) {
	proxy := corev1.Container{Name: inject.ProxyContainerName, Ports: []corev1.ContainerPort{{Name: inject.PortNameInbound, ContainerPort: 4200}}}
	initC := corev1.Container{Name: inject.InitContainerName, Args: []string{"init", "--skip-inbound-ports=22,8000-8100"}}
	injected := metav1.ObjectMeta{Annotations: map[string]string{inject.AnnotationInjected: "meshproxy:v1"}}
	for _, tc := range []struct {
		name string
		pod  corev1.Pod
		want sidecar
	}{
		{"not injected", corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{proxy}}}, sidecar{}},
		{"annotation without a proxy", corev1.Pod{ObjectMeta: injected}, sidecar{inboundPort: 4143}},
		{"native sidecar", corev1.Pod{ObjectMeta: injected, Spec: corev1.PodSpec{InitContainers: []corev1.Container{initC, proxy}}},
			sidecar{meshed: true, inboundPort: 4200, skipInbound: ports.MustParse("22,8000-8100")}},
		{"proxy container, default port", corev1.Pod{ObjectMeta: injected, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: inject.ProxyContainerName}}}},
			sidecar{meshed: true, inboundPort: 4143}},
	} {
		got := readSidecar(&tc.pod)
		if got.meshed != tc.want.meshed || (got.meshed && got.inboundPort != tc.want.inboundPort) || got.skipInbound.String() != tc.want.skipInbound.String() {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestDiff(t *testing.T) {
	ep := func(addr string, meshed bool) *pb.Endpoint { return &pb.Endpoint{Address: addr, Meshed: meshed} }
	svc := &pb.Service{Name: "a", Namespace: "n", Port: 80}
	state := func(kind pb.Kind, s *pb.Service, eps ...*pb.Endpoint) *answer {
		a := &answer{kind: kind, service: s, endpoints: map[string]*pb.Endpoint{}}
		for _, e := range eps {
			a.endpoints[e.Address] = e
		}
		return a
	}
	opaqueSvc := &pb.Service{Name: "a", Namespace: "n", Port: 80, Opaque: true}
	otherSvc := &pb.Service{Name: "b", Namespace: "n", Port: 80}
	for _, tc := range []struct {
		name      string
		last, now *answer
		want      *pb.Update
	}{
		{"first is a snapshot", nil, state(pb.Kind_KIND_SERVICE, svc, ep("b:1", true), ep("a:1", false)),
			&pb.Update{Kind: &pb.Update_Snapshot{Snapshot: &pb.Snapshot{Kind: pb.Kind_KIND_SERVICE, Service: svc,
				Endpoints: []*pb.Endpoint{ep("a:1", false), ep("b:1", true)}}}}},
		{"unchanged", state(pb.Kind_KIND_SERVICE, svc, ep("a:1", true)), state(pb.Kind_KIND_SERVICE, svc, ep("a:1", true)), nil},
		{"add, change and remove", state(pb.Kind_KIND_SERVICE, svc, ep("a:1", true), ep("b:1", true)),
			state(pb.Kind_KIND_SERVICE, svc, ep("a:1", false), ep("c:1", true)),
			&pb.Update{Kind: &pb.Update_Delta{Delta: &pb.Delta{Add: []*pb.Endpoint{ep("a:1", false), ep("c:1", true)}, Remove: []string{"b:1"}}}}},
		{"profile change", state(pb.Kind_KIND_SERVICE, svc), state(pb.Kind_KIND_SERVICE, opaqueSvc),
			&pb.Update{Kind: &pb.Update_Delta{Delta: &pb.Delta{Service: opaqueSvc}}}},
		{"kind change is a snapshot", state(pb.Kind_KIND_SERVICE, svc, ep("a:1", true)), state(pb.Kind_KIND_UNKNOWN, nil),
			&pb.Update{Kind: &pb.Update_Snapshot{Snapshot: &pb.Snapshot{Kind: pb.Kind_KIND_UNKNOWN, Endpoints: []*pb.Endpoint{}}}}},
		{"another service at the address is a snapshot", state(pb.Kind_KIND_SERVICE, svc), state(pb.Kind_KIND_SERVICE, otherSvc),
			&pb.Update{Kind: &pb.Update_Snapshot{Snapshot: &pb.Snapshot{Kind: pb.Kind_KIND_SERVICE, Service: otherSvc, Endpoints: []*pb.Endpoint{}}}}},
	} {
		if got := diff(tc.last, tc.now); !proto.Equal(got, tc.want) {
			t.Errorf("%s:\n got %v\nwant %v", tc.name, got, tc.want)
		}
	}
}
