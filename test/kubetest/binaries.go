//go:build linux

package kubetest

import (
	"testing"

	"github.com/seed722d2a70/meshproxy/test/internal/sharedbin"
)

// commands are the binaries the harness runs, as installed by
// shared/kubernetes/install.sh (the four kube-* names link to kube-multi).
var commands = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-proxy", "kubectl"}

// Binaries returns the directory holding etcd, kube-apiserver,
// kube-controller-manager, kube-proxy and kubectl: $MESHPROXY_KUBE_DIR, or
// <repo>/.cache/kubernetes where scripts/deps.sh puts them. When they are
// missing it installs them there with
// $MESHPROXY_SHARED_DIR/kubernetes/install.sh (default <repo>/../shared),
// under a file lock since test binaries of several packages run at once.
// Without that script it skips t, or fails it under CI (CI=true), where a
// skipped test would hide a missing install step.
func Binaries(t testing.TB) string {
	t.Helper()
	return sharedbin.Dir(t, sharedbin.Set{
		Name: "Kubernetes", DirEnv: "MESHPROXY_KUBE_DIR", Cache: "kubernetes", Script: "kubernetes/install.sh",
		Commands: commands,
	})
}
