package image

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/seed722d2a70/meshproxy/test/netns"
)

// podman runs Debian's podman with runc and file and process limits the
// machine can grant: without CAP_SYS_RESOURCE, crun and podman's default
// limits fail to start containers.
func podman(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("podman", append([]string{"--runtime", "runc"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("podman %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

var limits = []string{"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}

func TestProxyImageRunsVersionAndInstallsRulesInAPodNamespace(t *testing.T) {
	netns.Require(t, "podman", "runc", "iptables-save")
	var b [4]byte
	_, _ = rand.Read(b[:])
	version := "v0.0.0-podman-" + hex.EncodeToString(b[:])
	imgs, err := Build(context.Background(), testOptions(t, version))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), ProxyName)
	ref := Ref(DefaultRepository, ProxyName, version)
	if err := WriteLayout(dir, imgs.Proxy, ref); err != nil {
		t.Fatal(err)
	}
	if err := WriteArchive(dir, dir+".tar", created); err != nil {
		t.Fatal(err)
	}

	podman(t, "pull", "-q", "oci-archive:"+dir+".tar:"+ref)
	t.Cleanup(func() {
		if out, err := exec.Command("podman", "rmi", "-f", ref).CombinedOutput(); err != nil {
			t.Errorf("podman rmi %s: %v: %s", ref, err, out)
		}
	})

	out := podman(t, append(append([]string{"run", "--rm"}, limits...), ref, "version")...)
	if !strings.HasPrefix(out, "meshproxy "+version+" ") {
		t.Errorf("meshproxy version in the image printed %q, want meshproxy %s (...)", out, version)
	}

	// The init step, as the injected init container runs it: root, with
	// NET_ADMIN and NET_RAW, in the pod's network namespace.
	ns := netns.New(t, "img")
	podman(t, append(append([]string{"run", "--rm"}, limits...),
		"--network", "ns:/run/netns/"+ns.Name, "--cap-add", "NET_ADMIN,NET_RAW", "--user", "0",
		ref, "init", "--proxy-uid=2102")...)
	rules := ns.MustRun(t, "iptables-save", "-t", "nat")
	for _, want := range []string{
		":MESHPROXY_INBOUND",
		":MESHPROXY_OUTBOUND",
		"-A PREROUTING -p tcp -j MESHPROXY_INBOUND",
		"-A OUTPUT -p tcp -j MESHPROXY_OUTBOUND",
		"-A MESHPROXY_OUTBOUND -m owner --uid-owner 2102 -j RETURN",
	} {
		if !strings.Contains(rules, want) {
			t.Errorf("nat table after init from the image lacks %q:\n%s", want, rules)
		}
	}
}
