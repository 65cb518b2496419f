// Package install renders meshproxy's control plane as Kubernetes manifests,
// as `linkerd install` does: a namespace, the destination controller, the
// injector webhook with its serving certificate, and a ConfigMap recording
// the installation's settings. `meshproxy install` prints them for
// `kubectl apply -f -`; `meshproxy uninstall` prints what to delete.
//
// Objects are built from the Kubernetes Go types and rendered in a fixed
// order with sorted keys, so the output depends only on the Options and
// the injector's TLS material (generated at install time unless given, or
// left to cert-manager).
package install

import (
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/internal/manifest"
	"github.com/seed722d2a70/meshproxy/internal/release"
)

// Names of the control plane's objects. Namespaced ones live in
// Options.Namespace; cluster-scoped ones are prefixed with it (see
// Options.ClusterName), so that two installations do not collide.
const (
	DestinationName = "meshproxy-destination"
	InjectorName    = "meshproxy-injector"
	ConfigName      = "meshproxy-config"
	// TLSSecretName holds the injector's serving certificate (tls.crt,
	// tls.key) and the CA that signed it (ca.crt), whatever made it.
	TLSSecretName = "meshproxy-injector-tls"
	// IssuerName and CertificateName are cert-manager's objects with
	// Options.CertManager.
	IssuerName      = "meshproxy-selfsigned"
	CertificateName = "meshproxy-injector"
	// WebhookName is the webhook's name inside the
	// MutatingWebhookConfiguration.
	WebhookName = "inject.meshproxy.io"
)

// Ports of the control plane.
const (
	DestinationPort      = 8086 // the destination API, gRPC over mTLS
	DestinationAdminPort = 9996 // /live, /ready, /metrics
	InjectorPort         = 8443 // the webhook, /live, /metrics
)

// Keys of the ConfigMap, which records the installation's settings for
// `meshproxy check` and for people.
const (
	ConfigTrustDomain     = "trustDomain"
	ConfigClusterDomain   = "clusterDomain"
	ConfigProxyImage      = "proxyImage"
	ConfigDestinationAddr = "destinationAddr"
	ConfigSocket          = "socket"
	ConfigCSIDriver       = "csiDriver"
	ConfigOpaquePorts     = "opaquePorts"
	ConfigCertManager     = "certManager"
)

// LabelPartOf marks every object of the installation.
const LabelPartOf = "app.kubernetes.io/part-of"

// Options are what `meshproxy install` takes. DefaultOptions returns the
// defaults; Validate checks them.
type Options struct {
	// Namespace of the control plane, created by the manifests.
	Namespace string
	// Image runs `meshproxy destination` and `meshproxy injector` (the full
	// build); ProxyImage is what the injector injects (the sidecar build).
	Image           string
	ProxyImage      string
	ImagePullPolicy corev1.PullPolicy
	// TrustDomain is the workloads' SPIFFE trust domain, given to the
	// destination controller (empty: the controller's own).
	TrustDomain   string
	ClusterDomain string
	// OpaquePorts is the default opaque-ports list of the controller.
	OpaquePorts string
	// Socket, CSIDriver and HostSocketDir say where the control plane's and
	// the proxies' SPIRE Workload API socket comes from, as for inject.
	Socket        inject.SocketSource
	CSIDriver     string
	HostSocketDir string
	// Replicas of each Deployment.
	Replicas int32
	// Resources of the controller's and the injector's containers;
	// ProxyResources are given to the injector for the proxies.
	Resources      corev1.ResourceRequirements
	ProxyResources corev1.ResourceRequirements
	// CertManager has cert-manager issue the injector's certificate (a
	// self-signed Issuer and a Certificate) and inject its CA into the
	// webhook, instead of TLS.
	CertManager bool
	// TLS is the injector's certificate; nil without CertManager: Objects
	// fails. NewTLS makes one.
	TLS *TLS
}

// DefaultImage is the control-plane image of this build's version
// (ghcr.io/seed722d2a70/meshproxy-controller:VERSION, `make image`): the
// full build, for the destination controller and the injector.
var DefaultImage = release.Image(release.ControllerName)

// DefaultOptions returns the settings of `meshproxy install` without flags
// (no TLS material).
func DefaultOptions() Options {
	d := inject.DefaultConfig()
	return Options{
		Namespace:       "meshproxy",
		Image:           DefaultImage,
		ProxyImage:      inject.DefaultImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		TrustDomain:     "mesh.local",
		ClusterDomain:   "cluster.local",
		OpaquePorts:     config.DefaultOpaquePorts,
		Socket:          inject.SocketCSI,
		CSIDriver:       d.CSIDriver,
		HostSocketDir:   d.HostSocketDir,
		Replicas:        1,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("50m"),
				corev1.ResourceMemory: resource.MustParse("64Mi"),
			},
			Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
		},
		ProxyResources: d.ProxyResources,
	}
}

// Validate reports the first setting that cannot be installed.
func (o *Options) Validate() error {
	switch {
	case o.Namespace == "":
		return errors.New("install: no namespace")
	case o.Image == "" || o.ProxyImage == "":
		return errors.New("install: no image")
	case o.ClusterDomain == "":
		return errors.New("install: no cluster domain")
	case o.TrustDomain == "":
		// The proxies are told the controller's SPIFFE ID, which names it.
		return errors.New("install: no trust domain")
	case !validTrustDomain(o.TrustDomain):
		return fmt.Errorf("install: trust domain %q is not one", o.TrustDomain)
	case o.Replicas < 1:
		return fmt.Errorf("install: %d replicas", o.Replicas)
	case o.Socket != inject.SocketCSI && o.Socket != inject.SocketHostPath:
		return fmt.Errorf("install: socket %q: want csi or hostpath", o.Socket)
	case !o.CertManager && o.TLS == nil:
		return errors.New("install: no TLS material for the injector, and no cert-manager")
	}
	return nil
}

// ClusterName is the name of a cluster-scoped object of the installation,
// e.g. "meshproxy-destination" for the ClusterRole of the controller in
// namespace meshproxy.
func (o *Options) ClusterName(component string) string {
	return o.Namespace + "-" + component
}

// DestinationAddr is the controller's Service address the injected proxies
// are given.
func (o *Options) DestinationAddr() string {
	return fmt.Sprintf("%s.%s.svc.%s:%d", DestinationName, o.Namespace, o.ClusterDomain, DestinationPort)
}

// InjectorDNSNames are the names the injector's certificate is for: the
// apiserver calls it as <service>.<namespace>.svc.
func (o *Options) InjectorDNSNames() []string {
	svc := InjectorName + "." + o.Namespace
	return []string{svc + ".svc", svc + ".svc." + o.ClusterDomain, svc}
}

// Objects returns the installation's objects, in the order to apply them:
// the namespace first, the webhook last (so that it is not called before
// its Deployment exists).
func Objects(o Options) ([]any, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	objs := []any{namespace(&o), configMap(&o)}
	objs = append(objs, destination(&o)...)
	objs = append(objs, injector(&o)...)
	if o.CertManager {
		objs = append(objs, certManager(&o)...)
	} else {
		objs = append(objs, tlsSecret(&o))
	}
	objs = append(objs, webhook(&o))
	return objs, nil
}

// Render writes the objects as one YAML stream.
func Render(objs []any) ([]byte, error) {
	var out bytes.Buffer
	for i, obj := range objs {
		y, err := encode(obj)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(y)
	}
	return out.Bytes(), nil
}

// encode renders one object as YAML, without what the apiserver fills in
// (status) and the empty namespace spec the Go types cannot omit.
func encode(obj any) ([]byte, error) {
	js, err := manifest.EncodeJSON(obj)
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(js, &fields); err != nil {
		return nil, err
	}
	delete(fields, "status")
	if string(fields["spec"]) == "{}" {
		delete(fields, "spec")
	}
	if js, err = json.Marshal(fields); err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(js)
}

// Manifests renders Objects(o).
func Manifests(o Options) ([]byte, error) {
	objs, err := Objects(o)
	if err != nil {
		return nil, err
	}
	return Render(objs)
}

func configMap(o *Options) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta:   typeMeta("v1", "ConfigMap"),
		ObjectMeta: o.meta(ConfigName, ""),
		Data: map[string]string{
			ConfigTrustDomain:     o.TrustDomain,
			ConfigClusterDomain:   o.ClusterDomain,
			ConfigProxyImage:      o.ProxyImage,
			ConfigDestinationAddr: o.DestinationAddr(),
			ConfigSocket:          string(o.Socket),
			ConfigCSIDriver:       o.CSIDriver,
			ConfigOpaquePorts:     o.OpaquePorts,
			ConfigCertManager:     strconv.FormatBool(o.CertManager),
		},
	}
}

// validTrustDomain reports whether td is a SPIFFE trust domain name.
func validTrustDomain(td string) bool {
	_, err := spiffeid.TrustDomainFromString(td)
	return err == nil && !strings.Contains(td, "/")
}
