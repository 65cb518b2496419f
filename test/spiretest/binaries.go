//go:build linux

package spiretest

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

// Binaries returns the directory holding spire-server and spire-agent,
// installing them there first if they are missing. The install is guarded
// by a file lock, since test binaries of several packages run at once.
func Binaries(t testing.TB) string {
	t.Helper()
	dir, shared, err := locations()
	if err != nil {
		t.Fatal(err)
	}
	if present(dir) {
		return dir
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
	if present(dir) { // another process installed them while we waited
		return dir
	}
	script := filepath.Join(shared, "spire", "install.sh")
	out, err := exec.Command("bash", script, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("installing SPIRE with %s: %v\n%s", script, err, out)
	}
	if !present(dir) {
		t.Fatalf("%s did not install spire-server and spire-agent into %s", script, dir)
	}
	return dir
}

// locations returns the binary directory and the shared directory, from
// the environment or relative to the repository root.
func locations() (dir, shared string, err error) {
	dir, shared = os.Getenv("MESHPROXY_SPIRE_DIR"), os.Getenv("MESHPROXY_SHARED_DIR")
	if dir != "" && shared != "" {
		return dir, shared, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", "", err
	}
	if dir == "" {
		dir = filepath.Join(root, ".cache", "spire")
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
			return "", fmt.Errorf("spiretest: no go.mod of %s above the working directory; set MESHPROXY_SPIRE_DIR and MESHPROXY_SHARED_DIR", modulePath)
		}
		dir = parent
	}
}

func present(dir string) bool {
	for _, b := range []string{"spire-server", "spire-agent"} {
		fi, err := os.Stat(filepath.Join(dir, b))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}
