//go:build linux

package install_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seed722d2a70/meshproxy/install"
	"github.com/seed722d2a70/meshproxy/test/kubetest"
)

// TestInstallAppliesAndUninstallRemoves applies the manifests to a real
// apiserver with strict server-side field validation, applies the same
// output again (nothing changes), renders it again from the cluster's own
// certificate as -reuse-tls does (the same bytes), then deletes what
// uninstall names and finds nothing left.
func TestInstallAppliesAndUninstallRemoves(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{})
	ctx := context.Background()
	o := install.DefaultOptions()
	o.TLS = newTLS(t, o)
	out, err := install.Manifests(o)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := install.Objects(o)
	if err != nil {
		t.Fatal(err)
	}

	applied := c.Kubectl(t, string(out), "apply", "--validate=strict", "-f", "-")
	lines := strings.Split(strings.TrimSpace(applied), "\n")
	if len(lines) != len(objs) {
		t.Fatalf("kubectl applied %d objects, want %d:\n%s", len(lines), len(objs), applied)
	}
	for _, l := range lines {
		if !strings.HasSuffix(l, " created") {
			t.Errorf("first apply: %q", l)
		}
	}

	t.Run("applying the same output again changes nothing", func(t *testing.T) {
		again := c.Kubectl(t, string(out), "apply", "--validate=strict", "-f", "-")
		for l := range strings.SplitSeq(strings.TrimSpace(again), "\n") {
			if !strings.HasSuffix(l, " unchanged") {
				t.Errorf("second apply: %q", l)
			}
		}
		// kubectl diff fails (exit 1) on any difference the server
		// would make.
		c.Kubectl(t, string(out), "diff", "-f", "-")
	})

	t.Run("the cluster's certificate renders the same output", func(t *testing.T) {
		s, err := c.Client.CoreV1().Secrets(o.Namespace).Get(ctx, install.TLSSecretName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		reused := o
		if reused.TLS, err = install.FromSecret(s); err != nil {
			t.Fatal(err)
		}
		again, err := install.Manifests(reused)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, out) {
			t.Error("rendering with the Secret's certificate differs from the applied output")
		}
	})

	t.Run("uninstall removes everything", func(t *testing.T) {
		del, err := install.UninstallManifests(o)
		if err != nil {
			t.Fatal(err)
		}
		deleted := c.Kubectl(t, string(del), "delete", "--ignore-not-found", "--wait=false", "-f", "-")
		if n := strings.Count(deleted, " deleted"); n != len(objs) {
			t.Errorf("kubectl deleted %d objects, want %d:\n%s", n, len(objs), deleted)
		}
		// No namespace controller runs here: do its last step, which it
		// takes once the namespace is empty (uninstall deleted its
		// objects one by one).
		ns, err := c.Client.CoreV1().Namespaces().Get(ctx, o.Namespace, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ns.DeletionTimestamp == nil {
			t.Fatal("namespace not being deleted")
		}
		ns.Spec.Finalizers = nil
		if _, err := c.Client.CoreV1().Namespaces().Finalize(ctx, ns, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			left := c.Kubectl(t, string(del), "get", "--ignore-not-found", "-o", "name", "-f", "-")
			if strings.TrimSpace(left) == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("left after uninstall:\n%s", left)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}
