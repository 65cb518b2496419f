package check

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/install"
	"github.com/seed722d2a70/meshproxy/ports"
)

// cluster is what the checks read, each list fetched once.
type cluster struct {
	o      Options
	client kubernetes.Interface

	configOnce sync.Once
	config     map[string]string // the installation's ConfigMap; nil without one
	configErr  error

	podsOnce sync.Once
	pods     []corev1.Pod
	podsErr  error

	nsOnce     sync.Once
	namespaces map[string]*corev1.Namespace
	nsErr      error

	svcOnce  sync.Once
	services []corev1.Service
	svcErr   error
}

func newCluster(o Options) *cluster {
	return &cluster{o: o, client: o.Client}
}

// installation returns the control plane's ConfigMap data, nil when there
// is none.
func (c *cluster) installation(ctx context.Context) (map[string]string, error) {
	c.configOnce.Do(func() {
		cm, err := c.client.CoreV1().ConfigMaps(c.o.Namespace).Get(ctx, install.ConfigName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			c.configErr = err
		default:
			c.config = cm.Data
			if c.config == nil {
				c.config = map[string]string{}
			}
		}
	})
	return c.config, c.configErr
}

// setting is the installation's value of key, or def.
func (c *cluster) setting(ctx context.Context, key, def string) string {
	cfg, _ := c.installation(ctx)
	if v, ok := cfg[key]; ok && v != "" {
		return v
	}
	return def
}

// defaultOpaque is the installation's default opaque ports.
func (c *cluster) defaultOpaque(ctx context.Context) (ports.Set, error) {
	return ports.Parse(c.setting(ctx, install.ConfigOpaquePorts, config.DefaultOpaquePorts))
}

// listPods returns the pods of every namespace that are not done.
func (c *cluster) listPods(ctx context.Context) ([]corev1.Pod, error) {
	c.podsOnce.Do(func() {
		list, err := c.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil {
			c.podsErr = fmt.Errorf("listing pods: %w", err)
			return
		}
		for _, p := range list.Items {
			if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
				c.pods = append(c.pods, p)
			}
		}
	})
	return c.pods, c.podsErr
}

func (c *cluster) listNamespaces(ctx context.Context) (map[string]*corev1.Namespace, error) {
	c.nsOnce.Do(func() {
		list, err := c.client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			c.nsErr = fmt.Errorf("listing namespaces: %w", err)
			return
		}
		c.namespaces = map[string]*corev1.Namespace{}
		for i := range list.Items {
			c.namespaces[list.Items[i].Name] = &list.Items[i]
		}
	})
	return c.namespaces, c.nsErr
}

func (c *cluster) listServices(ctx context.Context) ([]corev1.Service, error) {
	c.svcOnce.Do(func() {
		list, err := c.client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
		if err != nil {
			c.svcErr = fmt.Errorf("listing services: %w", err)
			return
		}
		c.services = list.Items
	})
	return c.services, c.svcErr
}

func (c *cluster) listNetworkPolicies(ctx context.Context) ([]networkingv1.NetworkPolicy, error) {
	list, err := c.client.NetworkingV1().NetworkPolicies("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing network policies: %w", err)
	}
	return list.Items, nil
}

// injected reports whether a pod has the proxy, and with which image.
func injected(p *corev1.Pod) (image string, ok bool) {
	image, ok = p.Annotations[inject.AnnotationInjected]
	return image, ok
}

// appContainers are a pod's containers but the proxy's own.
func appContainers(p *corev1.Pod) []corev1.Container {
	var out []corev1.Container
	for _, list := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, ctr := range list {
			if ctr.Name != inject.ProxyContainerName && ctr.Name != inject.InitContainerName {
				out = append(out, ctr)
			}
		}
	}
	return out
}

func podName(p *corev1.Pod) string { return "pod " + p.Namespace + "/" + p.Name }
