package test

import (
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/test/kubetest"
	"github.com/seed722d2a70/meshproxy/test/meshtest"
	"github.com/seed722d2a70/meshproxy/test/netns"
)

// The Kubernetes test bed: the pod test bed's pods (network namespaces with
// `meshproxy init` rules and a proxy as UID 2102) made by kubetest on a
// real control plane, where kube-proxy programs Service VIPs in the node's
// namespace, with a destination controller (`meshproxy destination`) as a
// process. Pods' IPs and readiness go through the API.

// fullBin builds, once, the meshproxy binary with the destination command.
var fullBin = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "meshproxy-full-bin")
	if err != nil {
		return "", err
	}
	_ = os.Chmod(dir, 0o755)
	return meshtest.BuildFull(dir)
})

type kubeBed struct {
	cluster    *kubetest.Cluster
	mesh       *meshtest.Mesh
	dir        string
	controller *meshtest.Process
	apiAddr    string // the controller's, fixed across its restarts
}

func newKubeBed(t testing.TB) *kubeBed {
	t.Helper()
	netns.Require(t, "iptables-restore", "iptables-save", "redis-server", "redis-cli")
	dir, err := os.MkdirTemp("", "meshproxy-kube-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := &kubeBed{
		cluster: kubetest.Start(t, kubetest.Options{KubeProxy: true}),
		mesh:    meshtest.NewMesh(t),
		dir:     dir,
	}
	b.apiAddr = net.JoinHostPort(b.cluster.HostAddr().String(), "0")
	b.startController(t)
	return b
}

// startController runs the destination controller on the bed's API
// address (a free port the first time, the same one after) and waits until
// it is ready.
func (b *kubeBed) startController(t testing.TB) {
	t.Helper()
	bin, err := fullBin()
	if err != nil {
		t.Fatal(err)
	}
	files := writePodFiles(t, b.dir, b.mesh, "destination-"+strconv.FormatInt(time.Now().UnixNano(), 36),
		spiffeid.RequireFromString("spiffe://"+meshtest.TrustDomain+config.DefaultDestinationIDPath), nil)
	b.controller = meshtest.StartProcessWith(t, bin, meshtest.ProcessOptions{Command: "destination"},
		"-addr", b.apiAddr, "-admin-addr", "127.0.0.1:0", "-kubeconfig", b.cluster.Kubeconfig,
		"-cert-file", files.cert, "-key-file", files.key, "-bundle-file", files.bundle)
	b.apiAddr = b.controller.API
	deadline := time.Now().Add(30 * time.Second)
	for !b.controller.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("destination controller not ready after 30 s:\n%s", b.controller.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kubePod describes a pod of the bed.
type kubePod struct {
	namespace, name, serviceAccount string
	labels, annotations             map[string]string
	ports                           []corev1.ContainerPort // the app's, for named targetPorts
	notReady                        bool
	// unmeshed pods get no proxy and no rules; meshed ones get the
	// injection marks the controller reads, and a proxy with runArgs,
	// resolving through the controller unless noController.
	unmeshed     bool
	noController bool
	runArgs      []string
	// destinations are the proxy's destination table.
	destinations []podDest
	// id overrides the SPIFFE ID the pod's proxy presents (default, the
	// SPIRE convention for its service account, which the controller
	// expects).
	id string
}

// pod adds a pod to the cluster and returns it as the pod test bed's pod,
// so that its helpers (servers, clients, metrics) work on it.
func (b *kubeBed) pod(t testing.TB, k kubePod) *pod {
	t.Helper()
	if k.serviceAccount == "" {
		k.serviceAccount = "default"
	}
	containers := []corev1.Container{{Name: "app", Ports: k.ports}}
	annotations := map[string]string{}
	for key, v := range k.annotations {
		annotations[key] = v
	}
	if !k.unmeshed {
		annotations[inject.AnnotationInjected] = "meshproxy:test"
		containers = append(containers, corev1.Container{Name: inject.ProxyContainerName,
			Ports: []corev1.ContainerPort{{Name: inject.PortNameInbound, ContainerPort: 4143}}})
	}
	kp := b.cluster.AddPod(t, kubetest.PodSpec{
		Namespace: k.namespace, Name: k.name, Labels: k.labels, Annotations: annotations,
		ServiceAccount: k.serviceAccount, Containers: containers, Ready: !k.notReady,
	})
	p := &pod{name: k.name, ns: kp.NS, ip: kp.IP}
	if k.unmeshed {
		return p
	}
	id := k.id
	if id == "" {
		id = "spiffe://" + meshtest.TrustDomain + "/ns/" + k.namespace + "/sa/" + k.serviceAccount
	}
	files := writePodFiles(t, b.dir, b.mesh, k.namespace+"-"+k.name, spiffeid.RequireFromString(id), k.destinations)
	args := k.runArgs
	if !k.noController {
		args = append([]string{"--destination-addr=" + b.apiAddr}, args...)
	}
	p.startProxy(t, files, nil, args...)
	return p
}
