package controller

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"

	"github.com/seed722d2a70/meshproxy/inject"
)

// Index names of the informers' stores.
const (
	byClusterIP   = "clusterIP"   // Services by each of their ClusterIPs
	byPodIP       = "podIP"       // Pods by each of their IPs (not hostNetwork, not finished)
	byServiceName = "serviceName" // EndpointSlices by "namespace/service"
	byAddress     = "address"     // EndpointSlices by each endpoint address
)

// key names an object a subscription's answer depends on; events name the
// keys of the objects they touch.
type key string

// keyBuckets is the number of buckets keys are hashed into for
// Controller.keyGens: two keys in one bucket cost at most a needless
// recomputation.
const keyBuckets = 4096

// bucket hashes k (FNV-1a) into one of keyBuckets.
func (k key) bucket() int {
	h := uint32(2166136261)
	for i := 0; i < len(k); i++ {
		h ^= uint32(k[i])
		h *= 16777619
	}
	return int(h % keyBuckets)
}

func serviceKey(ns, name string) key { return key("s/" + ns + "/" + name) }
func podKey(ns, name string) key     { return key("p/" + ns + "/" + name) }
func ipKey(ip string) key            { return key("i/" + ip) }
func namespaceKey(ns string) key     { return key("n/" + ns) }

// index holds the informers and the stores answers are computed from.
type index struct {
	services   cache.SharedIndexInformer
	slices     cache.SharedIndexInformer
	pods       cache.SharedIndexInformer
	namespaces cache.SharedIndexInformer

	factory     informers.SharedInformerFactory
	metaFactory metadatainformer.SharedInformerFactory
}

// newIndex creates the informers (not yet started) and their indexes, and
// sends the keys of every changed object to notify.
func newIndex(client kubernetes.Interface, meta metadata.Interface, notify func(keys []key, obj any)) (*index, error) {
	// No periodic resync: answers follow events, and a resync would only
	// wake every subscription to find nothing changed.
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(trim))
	metaFactory := metadatainformer.NewSharedInformerFactory(meta, 0)
	ix := &index{
		services:    factory.Core().V1().Services().Informer(),
		slices:      factory.Discovery().V1().EndpointSlices().Informer(),
		pods:        factory.Core().V1().Pods().Informer(),
		namespaces:  metaFactory.ForResource(corev1.SchemeGroupVersion.WithResource("namespaces")).Informer(),
		factory:     factory,
		metaFactory: metaFactory,
	}
	for _, add := range []struct {
		inf cache.SharedIndexInformer
		idx cache.Indexers
	}{
		{ix.services, cache.Indexers{byClusterIP: serviceClusterIPs}},
		{ix.slices, cache.Indexers{byServiceName: sliceService, byAddress: sliceAddresses}},
		{ix.pods, cache.Indexers{byPodIP: podIPs}},
	} {
		if err := add.inf.AddIndexers(add.idx); err != nil {
			return nil, fmt.Errorf("adding indexers: %w", err)
		}
	}
	for _, h := range []struct {
		inf  cache.SharedIndexInformer
		keys func(obj any) []key
	}{
		{ix.services, serviceKeys},
		{ix.slices, sliceKeys},
		{ix.pods, podKeys},
		{ix.namespaces, namespaceKeys},
	} {
		_, err := h.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(obj any) { notify(h.keys(obj), obj) },
			UpdateFunc: func(old, obj any) {
				if sameVersion(old, obj) {
					return // a resync: nothing changed
				}
				notify(append(h.keys(old), h.keys(obj)...), obj)
			},
			DeleteFunc: func(obj any) { notify(h.keys(unwrap(obj)), nil) },
		})
		if err != nil {
			return nil, fmt.Errorf("adding event handler: %w", err)
		}
	}
	return ix, nil
}

// start runs the informers until stop is closed.
func (ix *index) start(stop <-chan struct{}) {
	ix.factory.Start(stop)
	ix.metaFactory.Start(stop)
}

// waitForSync waits until every store holds a full list, or stop closes.
func (ix *index) waitForSync(stop <-chan struct{}) bool {
	return cache.WaitForCacheSync(stop, ix.services.HasSynced, ix.slices.HasSynced, ix.pods.HasSynced, ix.namespaces.HasSynced)
}

// shutdown waits for the informers' goroutines after stop was closed.
func (ix *index) shutdown() {
	ix.factory.Shutdown()
	ix.metaFactory.Shutdown()
}

// unwrap returns the last known state of a deleted object whose deletion
// the watch missed (a tombstone), or obj itself.
func unwrap(obj any) any {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return obj
}

func sameVersion(old, obj any) bool {
	o, ok1 := old.(metav1.Object)
	n, ok2 := obj.(metav1.Object)
	return ok1 && ok2 && o.GetResourceVersion() == n.GetResourceVersion()
}

func serviceKeys(obj any) []key {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return nil
	}
	keys := []key{serviceKey(svc.Namespace, svc.Name)}
	for _, ip := range clusterIPs(svc) {
		keys = append(keys, ipKey(ip))
	}
	return keys
}

// sliceKeys names the slice's Service and its endpoint addresses: pod-IP
// answers name a headless Service that publishes the pod.
func sliceKeys(obj any) []key {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil
	}
	var keys []key
	if name := s.Labels[discoveryv1.LabelServiceName]; name != "" {
		keys = append(keys, serviceKey(s.Namespace, name))
	}
	for _, ep := range s.Endpoints {
		for _, a := range ep.Addresses {
			keys = append(keys, ipKey(a))
		}
	}
	return keys
}

func podKeys(obj any) []key {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil
	}
	keys := []key{podKey(pod.Namespace, pod.Name)}
	for _, ip := range pod.Status.PodIPs {
		keys = append(keys, ipKey(ip.IP))
	}
	return keys
}

func namespaceKeys(obj any) []key {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil
	}
	return []key{namespaceKey(m.GetName())}
}

// clusterIPs are the addresses a Service answers on; none when headless.
func clusterIPs(svc *corev1.Service) []string {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	out := ips[:0:0]
	for _, ip := range ips {
		if ip != corev1.ClusterIPNone && ip != "" {
			out = append(out, ip)
		}
	}
	return out
}

func serviceClusterIPs(obj any) ([]string, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return nil, nil
	}
	return clusterIPs(svc), nil
}

func sliceService(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || s.Labels[discoveryv1.LabelServiceName] == "" {
		return nil, nil
	}
	return []string{s.Namespace + "/" + s.Labels[discoveryv1.LabelServiceName]}, nil
}

func sliceAddresses(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	var out []string
	for _, ep := range s.Endpoints {
		out = append(out, ep.Addresses...)
	}
	return out, nil
}

// podIPs indexes a pod by its IPs unless they are not its own: a
// hostNetwork pod shares the node's, and a finished pod's may already be
// another's.
func podIPs(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Spec.HostNetwork || finished(pod) {
		return nil, nil
	}
	out := make([]string, 0, len(pod.Status.PodIPs))
	for _, ip := range pod.Status.PodIPs {
		out = append(out, ip.IP)
	}
	if len(out) == 0 && pod.Status.PodIP != "" {
		out = append(out, pod.Status.PodIP)
	}
	return out, nil
}

func finished(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// trim keeps of each object only what answers need, so that a cluster's
// worth of pods costs the controller little memory: pods shrink to their
// identity, sidecar and addresses; every object loses its managed fields
// and the annotations that are not meshproxy's.
func trim(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return trimPod(o), nil
	case metav1.Object:
		o.SetManagedFields(nil)
		if a := o.GetAnnotations(); len(a) > 0 {
			o.SetAnnotations(ownAnnotations(a))
		}
	}
	return obj, nil
}

func trimPod(p *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			DeletionTimestamp: p.DeletionTimestamp, Annotations: ownAnnotations(p.Annotations),
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: p.Spec.ServiceAccountName,
			HostNetwork:        p.Spec.HostNetwork,
			Containers:         trimContainers(p.Spec.Containers),
			InitContainers:     trimContainers(p.Spec.InitContainers),
		},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}
	return out
}

// trimContainers keeps what sidecar() reads: the meshproxy containers'
// ports and arguments, and only the names of the others.
func trimContainers(cs []corev1.Container) []corev1.Container {
	out := make([]corev1.Container, len(cs))
	for i, c := range cs {
		out[i] = corev1.Container{Name: c.Name}
		if isMeshproxyContainer(c.Name) {
			out[i].Ports, out[i].Args, out[i].RestartPolicy = c.Ports, c.Args, c.RestartPolicy
			for _, e := range c.Env {
				if e.Name == inject.EnvOpaquePorts {
					out[i].Env = []corev1.EnvVar{e}
				}
			}
		}
	}
	return out
}

func ownAnnotations(a map[string]string) map[string]string {
	var out map[string]string
	for k, v := range a {
		if strings.HasPrefix(k, "meshproxy.io/") || strings.HasPrefix(k, "config.meshproxy.io/") ||
			k == corev1.EndpointsLastChangeTriggerTime {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}
