//go:build linux

// Package sharedbin installs, for tests, the binaries kept compressed in
// the shared directory beside the repository (SPIRE's, Kubernetes'), with
// the install script kept beside them, into the repository's .cache, once
// for all the test binaries that run at once.
package sharedbin

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

// Set is one set of binaries.
type Set struct {
	// Name names the set in messages ("SPIRE").
	Name string
	// DirEnv is the variable that names the directory instead
	// (MESHPROXY_SPIRE_DIR); by default it is <repo>/.cache/<Cache>.
	DirEnv, Cache string
	// Script is the install script's path in the shared directory
	// ($MESHPROXY_SHARED_DIR, by default <repo>/../shared), which takes the
	// directory as its argument.
	Script string
	// Commands must all be executable files in the directory.
	Commands []string
}

// Dir returns the directory holding the set's commands, installing them
// there first when they are missing, under a file lock. Without the install
// script it skips t, or fails it under CI (CI=true), where a skipped test
// would hide a missing install step.
func Dir(t testing.TB, s Set) string {
	t.Helper()
	dir, shared, err := s.locations()
	if err != nil {
		t.Fatal(err)
	}
	if s.present(dir) {
		return dir
	}
	script := filepath.Join(shared, s.Script)
	if _, err := os.Stat(script); err != nil {
		msg := fmt.Sprintf("the %s binaries are not in %s and %s is missing (%v); run scripts/deps.sh or set %s", s.Name, dir, script, err, s.DirEnv)
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
	if s.present(dir) { // another test binary installed them while we waited
		return dir
	}
	if out, err := exec.Command("bash", script, dir).CombinedOutput(); err != nil {
		t.Fatalf("installing %s with %s: %v\n%s", s.Name, script, err, out)
	}
	if !s.present(dir) {
		t.Fatalf("%s did not install %v into %s", script, s.Commands, dir)
	}
	return dir
}

// locations returns the binary directory and the shared directory, from
// the environment or relative to the repository root.
func (s Set) locations() (dir, shared string, err error) {
	dir, shared = os.Getenv(s.DirEnv), os.Getenv("MESHPROXY_SHARED_DIR")
	if dir != "" && shared != "" {
		return dir, shared, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", "", fmt.Errorf("%w; set %s and MESHPROXY_SHARED_DIR", err, s.DirEnv)
	}
	if dir == "" {
		dir = filepath.Join(root, ".cache", s.Cache)
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
			return "", fmt.Errorf("no go.mod of %s above the working directory", modulePath)
		}
		dir = parent
	}
}

// present reports whether every command is an executable file in dir
// (following links).
func (s Set) present(dir string) bool {
	for _, b := range s.Commands {
		fi, err := os.Stat(filepath.Join(dir, b))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}
