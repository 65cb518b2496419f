package check

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/install"
)

// spireAgentName is the SPIRE agent DaemonSet's name (or app label) in
// SPIRE's own manifests and Helm chart.
const spireAgentName = "spire-agent"

func checkSPIREAgent(ctx context.Context, c *cluster) ([]string, error) {
	list, err := c.client.AppsV1().DaemonSets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing daemonsets: %w", err)
	}
	for _, ds := range list.Items {
		l := ds.Labels
		if ds.Name == spireAgentName || l["app"] == spireAgentName || l["app.kubernetes.io/name"] == spireAgentName {
			return nil, nil
		}
	}
	return []string{"no DaemonSet named or labelled spire-agent in any namespace"}, nil
}

func checkCSIDriver(ctx context.Context, c *cluster) ([]string, error) {
	if c.setting(ctx, install.ConfigSocket, string(inject.SocketCSI)) == string(inject.SocketHostPath) {
		return nil, nil // the installation mounts the socket from the node
	}
	// The driver the installation was made with, as its ConfigMap says.
	driver := c.setting(ctx, install.ConfigCSIDriver, inject.DefaultCSIDriver)
	_, err := c.client.StorageV1().CSIDrivers().Get(ctx, driver, metav1.GetOptions{})
	if err != nil {
		return []string{fmt.Sprintf("CSIDriver %s: %v", driver, err)}, nil
	}
	return nil, nil
}

func checkProxyVersion(ctx context.Context, c *cluster) ([]string, error) {
	want := c.o.ProxyImage
	if want == "" {
		want = c.setting(ctx, install.ConfigProxyImage, inject.DefaultImage)
	}
	pods, err := c.listPods(ctx)
	if err != nil {
		return nil, err
	}
	var faults []string
	for i := range pods {
		if image, ok := injected(&pods[i]); ok && image != want {
			faults = append(faults, fmt.Sprintf("%s runs %s, not %s", podName(&pods[i]), image, want))
		}
	}
	return faults, nil
}

// checkProxyUID finds app containers of meshed pods (injected or to be)
// that run as the proxy's UID: the init container's rules exempt that
// user's traffic from redirection, so it would bypass the proxy.
func checkProxyUID(ctx context.Context, c *cluster) ([]string, error) {
	pods, err := c.listPods(ctx)
	if err != nil {
		return nil, err
	}
	namespaces, err := c.listNamespaces(ctx)
	if err != nil {
		return nil, err
	}
	var faults []string
	for i := range pods {
		p := &pods[i]
		_, isInjected := injected(p)
		enabled := p.Annotations[inject.AnnotationInject] == inject.Enabled
		if ns := namespaces[p.Namespace]; ns != nil && p.Annotations[inject.AnnotationInject] == "" {
			enabled = ns.Annotations[inject.AnnotationInject] == inject.Enabled
		}
		if !isInjected && !enabled {
			continue
		}
		for _, ctr := range appContainers(p) {
			uid := (*int64)(nil)
			if p.Spec.SecurityContext != nil {
				uid = p.Spec.SecurityContext.RunAsUser
			}
			if ctr.SecurityContext != nil && ctr.SecurityContext.RunAsUser != nil {
				uid = ctr.SecurityContext.RunAsUser
			}
			if uid != nil && *uid == inject.DefaultProxyUID {
				faults = append(faults, fmt.Sprintf("%s: container %s runs as UID %d, the proxy's", podName(p), ctr.Name, *uid))
			}
		}
	}
	return faults, nil
}
