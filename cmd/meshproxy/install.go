//go:build !sidecar

package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/install"
)

// installFlags registers the flags shared by install and uninstall and
// returns a function building the install.Options (without TLS).
func installFlags(fs *flag.FlagSet) func() (install.Options, error) {
	d := install.DefaultOptions()
	ns := fs.String("namespace", d.Namespace, "namespace of the control plane")
	image := fs.String("image", d.Image, "image of the destination controller and the injector (the full build)")
	proxyImage := fs.String("proxy-image", d.ProxyImage, "image the injector injects (the sidecar build)")
	pull := fs.String("image-pull-policy", string(d.ImagePullPolicy), "image pull policy: Always, IfNotPresent or Never")
	td := fs.String("trust-domain", d.TrustDomain, "trust domain of the workloads' and the controller's SPIFFE IDs")
	clusterDomain := fs.String("cluster-domain", d.ClusterDomain, "DNS domain of Service names")
	opaque := fs.String("opaque-ports", d.OpaquePorts, "the controller's default opaque ports")
	socket := fs.String("socket", string(d.Socket), "Workload API socket source of the control plane and the proxies: csi or hostpath")
	csiDriver := fs.String("csi-driver", d.CSIDriver, "CSI driver serving the Workload API socket")
	hostDir := fs.String("host-socket-dir", d.HostSocketDir, "node directory of the SPIRE agent socket, for -socket hostpath")
	replicas := fs.Int("replicas", int(d.Replicas), "replicas of the controller and of the injector")
	q := func(l corev1.ResourceList, n corev1.ResourceName) string {
		if v, ok := l[n]; ok {
			return v.String()
		}
		return ""
	}
	res := resourceFlags(fs, "", "control plane containers'",
		q(d.Resources.Requests, corev1.ResourceCPU), q(d.Resources.Requests, corev1.ResourceMemory), q(d.Resources.Limits, corev1.ResourceMemory))
	proxyRes := resourceFlags(fs, "proxy-", "injected proxies'",
		q(d.ProxyResources.Requests, corev1.ResourceCPU), q(d.ProxyResources.Requests, corev1.ResourceMemory), q(d.ProxyResources.Limits, corev1.ResourceMemory))
	certManager := fs.Bool("cert-manager", false, "have cert-manager issue the injector's certificate (an Issuer and a Certificate) and fill in the webhook's caBundle")
	return func() (install.Options, error) {
		o := d
		o.Namespace, o.Image, o.ProxyImage, o.ImagePullPolicy = *ns, *image, *proxyImage, corev1.PullPolicy(*pull)
		o.TrustDomain, o.ClusterDomain, o.OpaquePorts = *td, *clusterDomain, *opaque
		o.Socket, o.CSIDriver, o.HostSocketDir = inject.SocketSource(*socket), *csiDriver, *hostDir
		o.Replicas, o.CertManager = int32(*replicas), *certManager
		var err error
		if o.Resources, err = res(); err != nil {
			return o, err
		}
		if o.ProxyResources, err = proxyRes(); err != nil {
			return o, err
		}
		switch o.ImagePullPolicy {
		case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
		default:
			return o, fmt.Errorf("-image-pull-policy %q: want Always, IfNotPresent or Never", *pull)
		}
		return o, nil
	}
}

// runInstall prints the control plane's manifests.
func runInstall(ctx context.Context, env environment, args []string) error {
	fs := flag.NewFlagSet("meshproxy install", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintln(env.stderr, "usage: meshproxy install [flags] | kubectl apply -f -\n\n"+
			"Prints the control plane's manifests: the namespace, the destination controller and the\n"+
			"injector webhook, whose TLS certificate is made now (or with -reuse-tls kept from the\n"+
			"cluster, so that applying a new output changes nothing; or issued by cert-manager).\n"+
			"SPIRE and the SPIFFE CSI driver are not included.\n\nflags:")
		fs.PrintDefaults()
	}
	build := installFlags(fs)
	validity := fs.Duration("cert-validity", install.DefaultCertValidity, "validity of the injector's certificate")
	reuse := fs.Bool("reuse-tls", false, "keep the injector's certificate of the installation in the cluster (read with -kubeconfig), making a new one only when there is none")
	kubeconfig := fs.String("kubeconfig", env.getenv("KUBECONFIG"), "kubeconfig file for -reuse-tls; empty: in-cluster")
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	o, err := build()
	if err != nil {
		return err
	}
	if !o.CertManager {
		if *reuse {
			if o.TLS, err = clusterTLS(ctx, *kubeconfig, o.Namespace); err != nil {
				return err
			}
			// Reused only while it serves the installation's names for a
			// month more: an expired certificate would silently leave new
			// pods unmeshed (the webhook fails open).
			if o.TLS != nil {
				if err := install.VerifyServing(o.TLS.CertPEM, o.TLS.CAPEM, o.InjectorDNSNames()[0], time.Now().Add(install.RenewBefore)); err != nil {
					fmt.Fprintf(env.stderr, "meshproxy install: not reusing the injector's certificate (%v): a new one is made\n", err)
					o.TLS = nil
				}
			}
		}
		if o.TLS == nil {
			if o.TLS, err = install.NewTLS(o.InjectorDNSNames(), time.Now(), *validity); err != nil {
				return err
			}
		}
	}
	out, err := install.Manifests(o)
	if err != nil {
		return err
	}
	_, err = env.stdout.Write(out)
	return err
}

// clusterTLS reads the injector's certificate of an installation; nil when
// there is none.
func clusterTLS(ctx context.Context, kubeconfig, namespace string) (*install.TLS, error) {
	client, err := kubeClient(kubeconfig, "meshproxy-install")
	if err != nil {
		return nil, err
	}
	s, err := client.CoreV1().Secrets(namespace).Get(ctx, install.TLSSecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("-reuse-tls: %w", err)
	}
	return install.FromSecret(s)
}

// kubeRESTConfig is the client configuration of the kubeconfig file (empty:
// in-cluster), identifying as agent.
func kubeRESTConfig(kubeconfig, agent string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	cfg.UserAgent = agent + "/" + version
	return cfg, nil
}

// kubeClient is a clientset for the kubeconfig file (empty: in-cluster).
func kubeClient(kubeconfig, agent string) (kubernetes.Interface, error) {
	cfg, err := kubeRESTConfig(kubeconfig, agent)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return client, nil
}

// runUninstall prints the objects of an installation, for kubectl delete.
func runUninstall(_ context.Context, env environment, args []string) error {
	fs := flag.NewFlagSet("meshproxy uninstall", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintln(env.stderr, "usage: meshproxy uninstall [flags] | kubectl delete --ignore-not-found -f -\n\n"+
			"Prints the control plane's objects by kind and name, the webhook first and the namespace\n"+
			"last. Give the -namespace (and -cert-manager) the installation was made with.\n\nflags:")
		fs.PrintDefaults()
	}
	build := installFlags(fs)
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	o, err := build()
	if err != nil {
		return err
	}
	out, err := install.UninstallManifests(o)
	if err != nil {
		return err
	}
	_, err = env.stdout.Write(out)
	return err
}
