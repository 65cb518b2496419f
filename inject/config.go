package inject

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/internal/release"
)

// Names of what injection adds to a pod. Uninjection removes exactly these,
// so they are reserved: a workload's own container or volume must not use
// them.
const (
	ProxyContainerName = "meshproxy"
	InitContainerName  = "meshproxy-init"
	SocketVolumeName   = "meshproxy-spiffe"
	// XtablesVolumeName is an emptyDir mounted on the init container's /run
	// so iptables can take its lock with a read-only root filesystem.
	XtablesVolumeName = "meshproxy-xtables-lock"
)

// DefaultImage is the proxy image of this build's version
// (ghcr.io/seed722d2a70/meshproxy-proxy:VERSION, `make image`): the
// sidecar build, with the iptables the init container runs.
var DefaultImage = release.Image(release.ProxyName)

// Defaults of Config.
const (
	DefaultProxyUID  = 2102 // as Linkerd's proxy, so existing policies carry over
	DefaultCSIDriver = "csi.spiffe.io"
	// DefaultSocketDir is where the Workload API socket's directory is
	// mounted in the proxy container, as the SPIFFE CSI driver's examples do.
	DefaultSocketDir  = "/spiffe-workload-api"
	DefaultSocketFile = "spire-agent.sock"
	// DefaultHostSocketDir is the node directory of the SPIRE agent socket
	// used when the socket comes from a hostPath volume.
	DefaultHostSocketDir = "/run/spire/agent-sockets"
	// DefaultMeshedNetworks are the networks whose destinations injected
	// proxies take to be meshed: the private ranges, as Linkerd's
	// clusterNetworks default, covering the pod networks of most clusters.
	DefaultMeshedNetworks = "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8"
)

// SocketSource says where the proxy's Workload API socket comes from.
type SocketSource string

// Socket sources.
const (
	// SocketCSI mounts the socket directory from the SPIFFE CSI driver: no
	// hostPath volume, so the pod needs no privileged admission exception.
	SocketCSI SocketSource = "csi"
	// SocketHostPath mounts the SPIRE agent's socket directory from the node.
	SocketHostPath SocketSource = "hostpath"
)

// Config is what injection puts into every pod it changes. DefaultConfig
// returns values suitable for a cluster running SPIRE with the SPIFFE CSI
// driver.
type Config struct {
	// Image is the meshproxy image, used for the proxy and the init
	// container alike (`meshproxy run` and `meshproxy init`).
	Image           string
	ImagePullPolicy corev1.PullPolicy

	// ProxyUID is the user the proxy runs as; the init container exempts
	// its traffic from redirection.
	ProxyUID int64

	InboundPort  uint16
	OutboundPort uint16
	AdminPort    uint16

	// NativeSidecar runs the proxy as an init container with restartPolicy
	// Always (Kubernetes 1.29+), so it starts before and stops after the
	// app's containers; false makes it the first regular container.
	NativeSidecar bool

	// LogLevel is the proxy's log level when the pod does not say.
	LogLevel string

	// MeshedNetworks are the CIDRs (the cluster's pod networks) whose
	// destinations the proxy takes to be meshed when the pod does not say
	// (config.meshproxy.io/meshed-networks); without them an injected
	// proxy would send plain TCP to every other pod. Empty sets none.
	MeshedNetworks []string

	// DestinationAddr is the destination controller (host:port) the proxy
	// asks what is at each destination: Services and their endpoints,
	// identities, opaque ports. Empty: none, and the proxy routes by its
	// meshed networks alone.
	DestinationAddr string
	// DestinationIdentity is the controller's SPIFFE ID, when it is not
	// the proxies' default (meshproxy-destination in the namespace
	// meshproxy, see config.DefaultDestinationIDPath).
	DestinationIdentity string

	// Socket is the Workload API socket's source; CSIDriver and HostSocketDir
	// configure the two kinds; SocketDir and SocketFile locate the socket
	// inside the proxy container.
	Socket        SocketSource
	CSIDriver     string
	HostSocketDir string
	SocketDir     string
	SocketFile    string

	// ProxyResources and InitResources are the containers' requests and
	// limits.
	ProxyResources corev1.ResourceRequirements
	InitResources  corev1.ResourceRequirements
}

// DefaultConfig returns the configuration `meshproxy inject` uses without
// flags.
func DefaultConfig() Config {
	return Config{
		Image:           DefaultImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		ProxyUID:        DefaultProxyUID,
		InboundPort:     config.DefaultInboundPort,
		OutboundPort:    config.DefaultOutboundPort,
		AdminPort:       config.DefaultAdminPort,
		NativeSidecar:   true,
		LogLevel:        "info",
		MeshedNetworks:  strings.Split(DefaultMeshedNetworks, ","),
		Socket:          SocketCSI,
		CSIDriver:       DefaultCSIDriver,
		HostSocketDir:   DefaultHostSocketDir,
		SocketDir:       DefaultSocketDir,
		SocketFile:      DefaultSocketFile,
		ProxyResources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("32Mi"),
			},
			Limits: corev1.ResourceList{
				corev1.ResourceMemory: resource.MustParse("256Mi"),
			},
		},
		InitResources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("16Mi"),
			},
			Limits: corev1.ResourceList{
				corev1.ResourceMemory: resource.MustParse("64Mi"),
			},
		},
	}
}

// Validate reports a configuration injection cannot use.
func (c *Config) Validate() error {
	switch {
	case c.Image == "":
		return fmt.Errorf("%w: no image", ErrInvalidConfig)
	case c.ProxyUID <= 0:
		return fmt.Errorf("%w: proxy UID %d must be above 0 (root's traffic would escape redirection)", ErrInvalidConfig, c.ProxyUID)
	case c.ProxyUID >= 1<<32-1:
		return fmt.Errorf("%w: proxy UID %d is not a UID (below 4294967295)", ErrInvalidConfig, c.ProxyUID)
	case c.DestinationIdentity != "" && !validSPIFFEID(c.DestinationIdentity):
		return fmt.Errorf("%w: destination controller identity %q: want a SPIFFE ID", ErrInvalidConfig, c.DestinationIdentity)
	case c.DestinationAddr != "" && !validHostPort(c.DestinationAddr):
		return fmt.Errorf("%w: destination controller address %q: want host:port", ErrInvalidConfig, c.DestinationAddr)
	case c.InboundPort == 0 || c.OutboundPort == 0 || c.AdminPort == 0:
		return fmt.Errorf("%w: proxy ports must be set", ErrInvalidConfig)
	case c.InboundPort == c.OutboundPort || c.InboundPort == c.AdminPort || c.OutboundPort == c.AdminPort:
		return fmt.Errorf("%w: inbound, outbound and admin ports must differ, got %d, %d and %d",
			ErrInvalidConfig, c.InboundPort, c.OutboundPort, c.AdminPort)
	case c.SocketDir == "" || c.SocketFile == "":
		return fmt.Errorf("%w: socket directory and file must be set", ErrInvalidConfig)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("%w: log level %q", ErrInvalidConfig, c.LogLevel)
	}
	for _, n := range c.MeshedNetworks {
		if err := config.CheckNetwork(n); err != nil {
			return fmt.Errorf("%w: meshed network %q: %w", ErrInvalidConfig, n, err)
		}
	}
	switch c.Socket {
	case SocketCSI:
		if c.CSIDriver == "" {
			return fmt.Errorf("%w: no CSI driver", ErrInvalidConfig)
		}
	case SocketHostPath:
		if c.HostSocketDir == "" {
			return fmt.Errorf("%w: no host socket directory", ErrInvalidConfig)
		}
	default:
		return fmt.Errorf("%w: socket source %q (want csi or hostpath)", ErrInvalidConfig, c.Socket)
	}
	return nil
}

// validHostPort reports whether s is host:port with a port number.
func validHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return false
	}
	p, err := strconv.ParseUint(port, 10, 16)
	return err == nil && p > 0
}

// validSPIFFEID reports whether s is one workload's SPIFFE ID.
func validSPIFFEID(s string) bool {
	id, err := spiffeid.FromString(s)
	return err == nil && id.Path() != ""
}
