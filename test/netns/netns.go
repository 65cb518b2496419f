// Package netns gives tests network namespaces of their own: a "pod" with
// its own interfaces, routes and iptables, in which sockets can be opened
// and processes started, torn down when the test ends. Tests that use it
// need root; [Require] skips them with a clear message when run by hand
// without it, and fails them under CI, where everything must run.
//
// Names are unique per call, so tests using namespaces can run in parallel.
package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Require skips t when the process cannot create network namespaces or
// lacks the commands named in cmds (besides ip), explaining why; under CI
// (CI=true) it fails instead, since CI runs as root with every dependency
// installed by scripts/deps.sh and a skipped test would hide a gap.
func Require(t testing.TB, cmds ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network namespaces and iptables need CAP_NET_ADMIN and CAP_SYS_ADMIN)")
	}
	for _, c := range append([]string{"ip"}, cmds...) {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, fmt.Sprintf("%s (installed by scripts/deps.sh)", c))
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "this test needs " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg + "; run it as root, as `make test` does in CI")
}

// NS is a named network namespace, as `ip netns` knows it.
type NS struct {
	Name string
}

// New creates a namespace named prefix-<random>, with its loopback
// interface up, and deletes it when t ends. prefix should be short: names
// appear in `ip netns list` and in logs.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	ns := &NS{Name: prefix + "-" + hex.EncodeToString(b[:])}
	if out, err := exec.Command("ip", "netns", "add", ns.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns.Name, err, out)
	}
	t.Cleanup(func() {
		// Deleting the namespace removes its interfaces (and so the veth
		// peers elsewhere) and its iptables rules; processes still in it
		// are stopped by their own cleanups, registered later, run first.
		if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns.Name, err, out)
		}
	})
	ns.MustRun(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Command returns a command that runs name with args inside the namespace
// (through `ip netns exec`), as root.
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Run runs a command inside the namespace and returns its combined output.
func (ns *NS) Run(name string, args ...string) (string, error) {
	out, err := ns.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), ns.Name, err, out)
	}
	return string(out), nil
}

// MustRun is Run that fails t on error.
func (ns *NS) MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := ns.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Do runs f on an OS thread that has entered the namespace: sockets f
// creates belong to the namespace for their whole life, and processes it
// starts are born in it. Goroutines f starts do not inherit the namespace.
func (ns *NS) Do(f func() error) error {
	target, err := unix.Open("/run/netns/"+ns.Name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", ns.Name, err)
	}
	defer unix.Close(target)

	runtime.LockOSThread()
	self, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open own namespace: %w", err)
	}
	defer unix.Close(self)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter namespace %s: %w", ns.Name, err)
	}
	ferr := f()
	if err := unix.Setns(self, unix.CLONE_NEWNET); err != nil {
		// The thread stays locked and in the wrong namespace: the runtime
		// ends it with the goroutine rather than reuse it.
		return fmt.Errorf("leave namespace %s: %w", ns.Name, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// Listen opens a listener inside the namespace.
func (ns *NS) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := ns.Do(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// DialContext connects from inside the namespace, as an application in the
// pod would.
func (ns *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		// The socket is created (and the connection begun) on this thread;
		// waiting for it to complete may happen anywhere.
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Dial is DialContext with a background context.
func (ns *NS) Dial(network, addr string) (net.Conn, error) {
	return ns.DialContext(context.Background(), network, addr)
}

// Start starts cmd inside the namespace. The process keeps the namespace
// for its life, and may drop privileges through cmd.SysProcAttr.
func (ns *NS) Start(cmd *exec.Cmd) error {
	return ns.Do(cmd.Start)
}
