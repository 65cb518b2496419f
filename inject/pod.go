package inject

import (
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Errors of injection.
var (
	ErrInvalidConfig = errors.New("invalid inject configuration")
	ErrBadAnnotation = errors.New("bad annotation")
)

// Action says what injection or uninjection did to one pod template.
type Action string

// Actions.
const (
	ActionInjected   Action = "injected"
	ActionUninjected Action = "uninjected"
	ActionUnchanged  Action = "unchanged" // already as it should be
	ActionSkipped    Action = "skipped"   // see Result.Reason
)

// Policy says which pods Inject changes.
type Policy int

// Policies.
const (
	// UnlessDisabled injects every pod not annotated disabled: what a
	// person running `meshproxy inject` over their manifests means.
	UnlessDisabled Policy = iota
	// WhenEnabled injects only pods whose pod, workload or namespace is
	// annotated enabled: what the admission webhook does, as it sees every
	// pod of the namespaces it is registered for.
	WhenEnabled
)

// Result is what happened to one pod template.
type Result struct {
	Object string // e.g. "Deployment prod/web"
	Action Action
	Reason string // why it was skipped
}

// Injector adds the proxy to pod specs and removes it again. It holds no
// state besides its configuration and is safe for concurrent use.
type Injector struct {
	cfg Config
}

// New returns an Injector for cfg, or an error wrapping ErrInvalidConfig.
func New(cfg Config) (*Injector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Injector{cfg: cfg}, nil
}

// Config returns the injector's configuration.
func (in *Injector) Config() Config { return in.cfg }

// Pod injects the proxy into the pod template described by meta and spec,
// changing them in place. Injection is idempotent: a pod injected before
// is first uninjected, so injecting twice gives what injecting once does, and
// changed annotations are picked up.
func (in *Injector) Pod(meta *metav1.ObjectMeta, spec *corev1.PodSpec, scope Scope, policy Policy) (Result, error) {
	v, err := scope.InjectValue()
	if err != nil {
		return Result{}, err
	}
	switch {
	case v == Disabled:
		return Result{Action: ActionSkipped, Reason: AnnotationInject + "=" + Disabled}, nil
	case policy == WhenEnabled && v != Enabled:
		return Result{Action: ActionSkipped, Reason: AnnotationInject + " not " + Enabled}, nil
	case spec.HostNetwork:
		return Result{Action: ActionSkipped, Reason: "hostNetwork: redirection would capture the node's traffic"}, nil
	}
	set, err := scope.settings(&in.cfg)
	if err != nil {
		return Result{}, err
	}
	beforeMeta, beforeSpec := meta.DeepCopy(), spec.DeepCopy()
	uninject(meta, spec)
	in.inject(meta, spec, set)
	if equality.Semantic.DeepEqual(beforeMeta, meta) && equality.Semantic.DeepEqual(beforeSpec, spec) {
		*meta, *spec = *beforeMeta, *beforeSpec // keep the user's exact form
		return Result{Action: ActionUnchanged}, nil
	}
	return Result{Action: ActionInjected}, nil
}

// Uninject removes what Pod added, in place.
func Uninject(meta *metav1.ObjectMeta, spec *corev1.PodSpec) Result {
	if uninject(meta, spec) {
		return Result{Action: ActionUninjected}
	}
	return Result{Action: ActionUnchanged}
}

// Injected reports whether the pod template carries the proxy.
func Injected(spec *corev1.PodSpec) bool {
	isProxy := func(c corev1.Container) bool { return c.Name == ProxyContainerName }
	return slices.ContainsFunc(spec.Containers, isProxy) || slices.ContainsFunc(spec.InitContainers, isProxy)
}

func (in *Injector) inject(meta *metav1.ObjectMeta, spec *corev1.PodSpec, set settings) {
	// The init container never redirects the admin port, so the kubelet's
	// probes and Prometheus reach it directly. The app's own probes are
	// redirected like any client: the inbound proxy lets unmeshed
	// (plaintext) connections through unless told to require identity.
	initC := in.initContainer(set.skipInbound, set.skipOutbound)
	proxy := in.proxyContainer(set)
	if in.cfg.NativeSidecar {
		// Redirection first, then the proxy, then the app's own init
		// containers, whose traffic is thus meshed too.
		spec.InitContainers = slices.Concat([]corev1.Container{initC, proxy}, spec.InitContainers)
	} else {
		// Without a running proxy, redirected traffic of the app's init
		// containers would fail: redirect only after they are done.
		spec.InitContainers = append(spec.InitContainers, initC)
		spec.Containers = slices.Concat([]corev1.Container{proxy}, spec.Containers)
	}
	spec.Volumes = append(spec.Volumes, in.socketVolume(), corev1.Volume{
		Name:         XtablesVolumeName,
		VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
	})
	if meta.Annotations == nil {
		meta.Annotations = map[string]string{}
	}
	meta.Annotations[AnnotationInjected] = in.cfg.Image
}

// uninject removes the injected containers, volumes and annotation and
// reports whether there were any.
func uninject(meta *metav1.ObjectMeta, spec *corev1.PodSpec) bool {
	changed := false
	drop := func(names ...string) func(corev1.Container) bool {
		return func(c corev1.Container) bool { return slices.Contains(names, c.Name) }
	}
	var n int
	if spec.InitContainers, n = deleteFunc(spec.InitContainers, drop(InitContainerName, ProxyContainerName)); n > 0 {
		changed = true
	}
	if spec.Containers, n = deleteFunc(spec.Containers, drop(ProxyContainerName)); n > 0 {
		changed = true
	}
	if spec.Volumes, n = deleteFunc(spec.Volumes, func(v corev1.Volume) bool {
		return v.Name == SocketVolumeName || v.Name == XtablesVolumeName
	}); n > 0 {
		changed = true
	}
	if _, ok := meta.Annotations[AnnotationInjected]; ok {
		delete(meta.Annotations, AnnotationInjected)
		if len(meta.Annotations) == 0 {
			meta.Annotations = nil
		}
		changed = true
	}
	return changed
}

// deleteFunc is slices.DeleteFunc that also reports how many went, and
// leaves nil rather than an empty slice when all did, so a round trip
// renders as the original.
func deleteFunc[E any](s []E, del func(E) bool) ([]E, int) {
	before := len(s)
	s = slices.DeleteFunc(s, del)
	if len(s) == 0 {
		s = nil
	}
	return s, before - len(s)
}

// socketPath is the Workload API address the proxy is given.
func (in *Injector) socketPath() string {
	return fmt.Sprintf("unix://%s/%s", in.cfg.SocketDir, in.cfg.SocketFile)
}

func (in *Injector) socketVolume() corev1.Volume {
	v := corev1.Volume{Name: SocketVolumeName}
	switch in.cfg.Socket {
	case SocketHostPath:
		dir := corev1.HostPathDirectory
		v.HostPath = &corev1.HostPathVolumeSource{Path: in.cfg.HostSocketDir, Type: &dir}
	default:
		v.CSI = &corev1.CSIVolumeSource{Driver: in.cfg.CSIDriver, ReadOnly: new(true)}
	}
	return v
}
