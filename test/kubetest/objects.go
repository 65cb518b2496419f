//go:build linux

package kubetest

import (
	"context"
	"maps"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// EnsureNamespace creates a namespace when missing and sets the given
// annotations on it (others are kept), and returns it. Namespaces are never
// deleted: without the namespace controller they would stay terminating;
// the whole cluster goes when the test ends.
func (c *Cluster) EnsureNamespace(t testing.TB, name string, annotations map[string]string) *corev1.Namespace {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	namespaces := c.Client.CoreV1().Namespaces()
	var ns *corev1.Namespace
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var err error
		ns, err = namespaces.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			ns, err = namespaces.Create(ctx, &corev1.Namespace{
				ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
			}, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) { // made meanwhile by a parallel test
				err = apierrors.NewConflict(corev1.Resource("namespaces"), name, err)
			}
			return err
		}
		if err != nil || len(annotations) == 0 {
			return err
		}
		if ns.Annotations == nil {
			ns.Annotations = map[string]string{}
		}
		maps.Copy(ns.Annotations, annotations)
		ns, err = namespaces.Update(ctx, ns, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("kubetest: namespace %s: %v", name, err)
	}
	return ns
}

// ensureServiceAccount creates a service account when missing: pods name
// one, and code that reads it (for identities) expects it to exist.
func (c *Cluster) ensureServiceAccount(t testing.TB, namespace, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	_, err := c.Client.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kubetest: service account %s/%s: %v", namespace, name, err)
	}
}

// Apply applies YAML manifests with `kubectl apply`, as a user would, and
// returns kubectl's output. Objects without a namespace go to "default".
func (c *Cluster) Apply(t testing.TB, manifests string) string {
	t.Helper()
	return c.Kubectl(t, manifests, "apply", "-f", "-")
}

// Kubectl runs kubectl against the cluster with stdin as its input and
// returns its standard output, failing t when it fails.
func (c *Cluster) Kubectl(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(c.bin, "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}
