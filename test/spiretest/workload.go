//go:build linux

package spiretest

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// UIDSelector selects the workloads running as uid.
func UIDSelector(uid int) string { return "unix:uid:" + strconv.Itoa(uid) }

// GIDSelector selects the workloads running with primary group gid.
func GIDSelector(gid int) string { return "unix:gid:" + strconv.Itoa(gid) }

// PathSelector selects the workloads executing the file at path (absolute,
// as the kernel reports it in /proc/PID/exe).
func PathSelector(path string) string { return "unix:path:" + path }

// CopyExecutable copies the executable src into a new directory that every
// user can read and search, and returns the copy's path. Processes started
// from two copies of one binary are told apart by PathSelector; a copy can
// also be run under another uid (the test binary's own directory is
// private to root). The copy is removed when the test ends.
func CopyExecutable(t testing.TB, src string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "spiretest-bin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(dir, filepath.Base(src))
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return dst
}
