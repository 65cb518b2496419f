package inject

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/seed722d2a70/meshproxy/ports"
)

// EnvOpaquePorts is the proxy container's opaque-ports setting, written when
// the pod, workload or namespace is annotated; the destination controller
// reads it back.
const EnvOpaquePorts = "MESHPROXY_OPAQUE_PORTS"

// Environment variables of `meshproxy run` the proxy container is given;
// config derives them from the flag names (MESHPROXY_ + FLAG_NAME).
const (
	envTransparent  = "MESHPROXY_TRANSPARENT"
	envInboundAddr  = "MESHPROXY_INBOUND_ADDR"
	envOutboundAddr = "MESHPROXY_OUTBOUND_ADDR"
	envAdminAddr    = "MESHPROXY_ADMIN_ADDR"
	envLogLevel     = "MESHPROXY_LOG_LEVEL"
	envOpaquePorts  = EnvOpaquePorts
	envSPIFFESocket = "MESHPROXY_SPIFFE_SOCKET"
	envMeshedNets   = "MESHPROXY_MESHED_NETWORKS"
	envDestination  = "MESHPROXY_DESTINATION_ADDR"
	envDestID       = "MESHPROXY_DESTINATION_IDENTITY"
)

// Names of the proxy container's ports (at most 15 characters).
const (
	PortNameInbound = "meshproxy-in"
	PortNameAdmin   = "meshproxy-admin"
)

// initContainer runs `meshproxy init`, which installs the iptables rules
// redirecting the pod's TCP traffic to the proxy. It is the only container
// with network privileges, and holds no others.
func (in *Injector) initContainer(skipInbound, skipOutbound ports.Set) corev1.Container {
	args := []string{
		"init",
		"--proxy-uid=" + strconv.FormatInt(in.cfg.ProxyUID, 10),
		"--inbound-port=" + strconv.Itoa(int(in.cfg.InboundPort)),
		"--outbound-port=" + strconv.Itoa(int(in.cfg.OutboundPort)),
		"--admin-port=" + strconv.Itoa(int(in.cfg.AdminPort)),
	}
	if skipInbound.Len() > 0 {
		args = append(args, "--skip-inbound-ports="+skipInbound.String())
	}
	if skipOutbound.Len() > 0 {
		args = append(args, "--skip-outbound-ports="+skipOutbound.String())
	}
	return corev1.Container{
		Name:            InitContainerName,
		Image:           in.cfg.Image,
		ImagePullPolicy: in.cfg.ImagePullPolicy,
		Args:            args,
		Resources:       *in.cfg.InitResources.DeepCopy(),
		SecurityContext: &corev1.SecurityContext{
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
			// iptables needs root with the two capabilities above; the
			// proxy itself never runs as root.
			RunAsUser:                new(int64(0)),
			RunAsNonRoot:             new(false),
			Privileged:               new(false),
			AllowPrivilegeEscalation: new(false),
			ReadOnlyRootFilesystem:   new(true),
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		VolumeMounts:             []corev1.VolumeMount{{Name: XtablesVolumeName, MountPath: "/run"}},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// proxyContainer runs `meshproxy run` with its settings in MESHPROXY_*
// variables, so `kubectl describe` shows them by name.
func (in *Injector) proxyContainer(set settings) corev1.Container {
	// Wildcard addresses of both families: for IPv6 the kernel redirects
	// outbound connections to [::1] and inbound ones to the pod's IPv6
	// address. Outside connections to the outbound port are redirected to
	// the inbound one, which refuses them as loops.
	env := []corev1.EnvVar{
		{Name: envTransparent, Value: "true"},
		{Name: envInboundAddr, Value: fmt.Sprintf("[::]:%d", in.cfg.InboundPort)},
		{Name: envOutboundAddr, Value: fmt.Sprintf("[::]:%d", in.cfg.OutboundPort)},
		{Name: envAdminAddr, Value: fmt.Sprintf("[::]:%d", in.cfg.AdminPort)},
		{Name: envLogLevel, Value: set.logLevel},
		{Name: envSPIFFESocket, Value: in.socketPath()},
	}
	if set.opaqueSet {
		// An empty variable counts as unset (the default list), so no
		// opaque ports are said as "none".
		v := set.opaque.String()
		if v == "" {
			v = ports.None
		}
		env = append(env, corev1.EnvVar{Name: envOpaquePorts, Value: v})
	}
	if len(set.meshedNets) > 0 {
		env = append(env, corev1.EnvVar{Name: envMeshedNets, Value: strings.Join(set.meshedNets, ",")})
	}
	if in.cfg.DestinationAddr != "" {
		env = append(env, corev1.EnvVar{Name: envDestination, Value: in.cfg.DestinationAddr})
	}
	if in.cfg.DestinationIdentity != "" {
		env = append(env, corev1.EnvVar{Name: envDestID, Value: in.cfg.DestinationIdentity})
	}
	c := corev1.Container{
		Name:            ProxyContainerName,
		Image:           in.cfg.Image,
		ImagePullPolicy: in.cfg.ImagePullPolicy,
		Args:            []string{"run"},
		Env:             env,
		Ports: []corev1.ContainerPort{
			{Name: PortNameInbound, ContainerPort: int32(in.cfg.InboundPort), Protocol: corev1.ProtocolTCP},
			{Name: PortNameAdmin, ContainerPort: int32(in.cfg.AdminPort), Protocol: corev1.ProtocolTCP},
		},
		Resources:      *in.cfg.ProxyResources.DeepCopy(),
		ReadinessProbe: in.probe("/ready", 5, 3),
		LivenessProbe:  in.probe("/live", 10, 3),
		SecurityContext: &corev1.SecurityContext{
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			RunAsUser:                new(in.cfg.ProxyUID),
			RunAsNonRoot:             new(true),
			Privileged:               new(false),
			AllowPrivilegeEscalation: new(false),
			ReadOnlyRootFilesystem:   new(true),
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		VolumeMounts:             []corev1.VolumeMount{{Name: SocketVolumeName, MountPath: in.cfg.SocketDir, ReadOnly: true}},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	if in.cfg.NativeSidecar {
		c.RestartPolicy = new(corev1.ContainerRestartPolicyAlways)
		// The kubelet starts the next container once a sidecar's startup
		// probe passes: the app starts with its proxy ready.
		c.StartupProbe = in.probe("/ready", 1, 120)
	}
	return c
}

func (in *Injector) probe(path string, period, failures int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path:   path,
			Port:   intstr.FromInt32(int32(in.cfg.AdminPort)),
			Scheme: corev1.URISchemeHTTP,
		}},
		PeriodSeconds:    period,
		FailureThreshold: failures,
		TimeoutSeconds:   1,
		SuccessThreshold: 1,
	}
}
