//go:build linux

package kubetest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

const modulePath = "github.com/seed722d2a70/meshproxy"

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
	dir, shared, err := locations()
	if err != nil {
		t.Fatal(err)
	}
	if present(dir) {
		return dir
	}
	script := filepath.Join(shared, "kubernetes", "install.sh")
	if _, err := os.Stat(script); err != nil {
		msg := fmt.Sprintf("kubetest: the Kubernetes binaries are not in %s and %s is missing (%v); run scripts/deps.sh or set MESHPROXY_KUBE_DIR", dir, script, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".install.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if present(dir) { // another test binary installed them while we waited
		return dir
	}
	if out, err := exec.Command("bash", script, dir).CombinedOutput(); err != nil {
		t.Fatalf("installing Kubernetes with %s: %v\n%s", script, err, out)
	}
	if !present(dir) {
		t.Fatalf("%s did not install %v into %s", script, commands, dir)
	}
	return dir
}

// locations returns the binary directory and the shared directory, from
// the environment or relative to the repository root.
func locations() (dir, shared string, err error) {
	dir, shared = os.Getenv("MESHPROXY_KUBE_DIR"), os.Getenv("MESHPROXY_SHARED_DIR")
	if dir != "" && shared != "" {
		return dir, shared, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", "", err
	}
	if dir == "" {
		dir = filepath.Join(root, ".cache", "kubernetes")
	}
	if shared == "" {
		shared = filepath.Join(root, "..", "shared")
	}
	return dir, shared, nil
}

// repoRoot walks up from the working directory (a package directory under
// go test) to meshproxy's go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module "+modulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("kubetest: no go.mod of %s above the working directory; set MESHPROXY_KUBE_DIR and MESHPROXY_SHARED_DIR", modulePath)
		}
		dir = parent
	}
}

// present reports whether every command is an executable file in dir
// (following the links to kube-multi).
func present(dir string) bool {
	for _, b := range commands {
		fi, err := os.Stat(filepath.Join(dir, b))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}
