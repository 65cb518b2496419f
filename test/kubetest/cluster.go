//go:build linux

package kubetest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/seed722d2a70/meshproxy/test/netns"
)

// Defaults of Options and of the cluster's fixed names.
var (
	DefaultServiceCIDR = netip.MustParsePrefix("10.96.0.0/16")
	DefaultClusterCIDR = netip.MustParsePrefix("10.1.0.0/16")
)

const (
	// nodeName is the name of the cluster's one Node.
	nodeName = "node-1"
	// readyTimeout bounds how long the apiserver may take to answer
	// /readyz; it usually takes 3 to 5 s.
	readyTimeout = 45 * time.Second
	// logTail is how many lines of each log a failed test shows.
	logTail = 60
	// apiTimeout bounds each API call the harness makes.
	apiTimeout = 30 * time.Second
	// startAttempts is how often Start tries again when a port it chose
	// was taken by another process before etcd or the apiserver bound it.
	startAttempts = 3
)

// Options configures Start. The zero value runs etcd and kube-apiserver
// only.
type Options struct {
	// ControllerManager runs kube-controller-manager with only its
	// EndpointSlice controller, which publishes the slices of Services
	// from the pods' status.
	ControllerManager bool
	// KubeProxy runs kube-proxy in iptables mode inside the node's network
	// namespace, and gives every pod a namespace routed through it. It
	// needs root, and implies ControllerManager: kube-proxy programs
	// Services from their EndpointSlices.
	KubeProxy bool
	// ServiceCIDR is where Services get their ClusterIPs; the apiserver's
	// own "kubernetes" Service takes the first. Default DefaultServiceCIDR.
	ServiceCIDR netip.Prefix
	// ClusterCIDR is where pods get their IPs, in /30 blocks. Default
	// DefaultClusterCIDR.
	ClusterCIDR netip.Prefix
}

// Cluster is a running control plane. Its methods may be called from
// parallel subtests.
type Cluster struct {
	// Kubeconfig is the path of a kubeconfig file for the admin user
	// (group system:masters), credentials embedded, its server reachable
	// from the host, the node and the pods.
	Kubeconfig string
	// Client is a clientset for the admin user.
	Client kubernetes.Interface
	// Node is the node's network namespace, where kube-proxy runs; nil
	// without Options.KubeProxy.
	Node *netns.NS
	// NodeName is the name of the Node object every pod is bound to.
	NodeName string

	opts    Options
	bin     string
	dir     string
	rest    *rest.Config
	apiIP   netip.Addr // where the apiserver listens
	nodeIP  netip.Addr // the Node's InternalIP
	procs   []*process // in start order
	started time.Time

	mu     sync.Mutex
	pods   ipam
	links  int  // veth pairs made in the node, for unique names
	closed bool // the control plane has been stopped
}

// Start runs a control plane for t, stopped when t ends: processes in the
// reverse order of their start (kube-proxy, kube-controller-manager,
// kube-apiserver, etcd), each with SIGTERM, then SIGKILL after 10 s, then
// the namespaces and files are removed. When t has failed, the end of each
// process's log is printed first.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if !opts.ServiceCIDR.IsValid() {
		opts.ServiceCIDR = DefaultServiceCIDR
	}
	if !opts.ClusterCIDR.IsValid() {
		opts.ClusterCIDR = DefaultClusterCIDR
	}
	for _, p := range []netip.Prefix{opts.ServiceCIDR, opts.ClusterCIDR} {
		if !p.Addr().Is4() || p.Bits() > 28 {
			t.Fatalf("kubetest: %s: only IPv4 CIDRs of /28 or larger are supported", p)
		}
	}
	bin := Binaries(t)
	if opts.KubeProxy {
		opts.ControllerManager = true
		netns.Require(t, "iptables", "iptables-save", "iptables-restore", "sysctl")
	}
	c := &Cluster{
		NodeName: nodeName,
		opts:     opts,
		bin:      bin,
		dir:      t.TempDir(),
		apiIP:    netip.MustParseAddr("127.0.0.1"),
		nodeIP:   netip.MustParseAddr("127.0.0.1"),
		started:  time.Now(),
		pods:     newIPAM(opts.ClusterCIDR.Masked()),
	}
	if opts.KubeProxy {
		// Created before the cleanup below is registered, so deleted
		// after the processes in it have stopped.
		c.Node = netns.New(t, "ktnode")
		c.apiIP, c.nodeIP = linkNode(t, c.Node)
		c.setUpNode(t)
	}
	t.Cleanup(func() { c.stop(t) })

	serviceIP := opts.ServiceCIDR.Masked().Addr().Next()
	pki, err := newPKI(c.dir, serviceIP, c.apiIP)
	if err != nil {
		t.Fatalf("kubetest: credentials: %v", err)
	}
	for attempt := 1; ; attempt++ {
		err := c.startAPIServer(pki)
		if err == nil {
			break
		}
		if attempt == startAttempts || !c.portTaken() {
			t.Fatalf("kubetest: %v", err)
		}
		t.Logf("kubetest: a port was taken (%v); starting again on others", err)
		c.stopProcesses()
		c.procs = nil
	}
	c.createNode(t)
	if opts.ControllerManager {
		c.startProcess(t, "kube-controller-manager", nil,
			"--kubeconfig", c.Kubeconfig,
			"--controllers", "endpointslice",
			"--leader-elect=false",
			"--bind-address", "127.0.0.1",
			"--secure-port", "0",
		)
	}
	if opts.KubeProxy {
		// kube-proxy waits for its Node, created above with an address.
		c.startProcess(t, "kube-proxy", c.Node.Start,
			"--kubeconfig", c.Kubeconfig,
			"--proxy-mode", "iptables",
			"--hostname-override", c.NodeName,
			"--cluster-cidr", opts.ClusterCIDR.String(),
			"--nodeport-addresses", "primary",
			// Fixed ports are fine: they are the node namespace's.
			"--metrics-bind-address", "127.0.0.1:10249",
			"--healthz-bind-address", "127.0.0.1:10256",
			// Leave conntrack's settings alone: the table size is the
			// host's, shared by every namespace.
			"--conntrack-max-per-core", "0",
			"--conntrack-tcp-timeout-established", "0",
			"--conntrack-tcp-timeout-close-wait", "0",
			"-v", "2",
		)
	}
	t.Logf("kubetest: control plane up in %s (apiserver at %s, logs in %s)",
		time.Since(c.started).Round(10*time.Millisecond), c.rest.Host, c.dir)
	return c
}

// HostAddr is the address the API server listens on, the test process's
// own: with KubeProxy, the node and the pods reach it too, so a server the
// test runs for the pods (a destination controller) listens there as well.
func (c *Cluster) HostAddr() netip.Addr { return c.apiIP }

// RESTConfig returns a copy of the admin user's client configuration, free
// to change. Client-side rate limiting is off: the cluster is the test's.
func (c *Cluster) RESTConfig() *rest.Config {
	return rest.CopyConfig(c.rest)
}

// startAPIServer starts etcd and kube-apiserver on free ports, writes the
// kubeconfig and waits until the apiserver is ready.
func (c *Cluster) startAPIServer(pki *pki) error {
	etcdPorts, err := freePorts(netip.MustParseAddr("127.0.0.1"), 2)
	if err != nil {
		return err
	}
	apiPort, err := freePorts(c.apiIP, 1)
	if err != nil {
		return err
	}
	// A fresh data dir: one left by an attempt that failed names other
	// peer URLs.
	dataDir := filepath.Join(c.dir, "etcd")
	if err := os.RemoveAll(dataDir); err != nil {
		return err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPorts[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPorts[1])
	if err := c.start("etcd", nil,
		"--name", "default",
		"--data-dir", dataDir,
		"--listen-client-urls", etcdURL,
		"--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL,
		"--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL,
		"--log-level", "warn",
		// The data dies with the test: durability would only cost time.
		"--unsafe-no-fsync",
	); err != nil {
		return err
	}
	apiAddr := netip.AddrPortFrom(c.apiIP, uint16(apiPort[0]))
	if err := c.start("kube-apiserver", nil,
		"--etcd-servers", etcdURL,
		"--bind-address", c.apiIP.String(),
		"--advertise-address", c.apiIP.String(),
		"--secure-port", strconv.Itoa(apiPort[0]),
		// No endpoint reconciler: it refuses a loopback advertise address,
		// and no one uses the "kubernetes" Service's endpoints here.
		"--endpoint-reconciler-type", "none",
		"--cert-dir", c.dir,
		"--tls-cert-file", pki.serverCert,
		"--tls-private-key-file", pki.serverKey,
		"--client-ca-file", pki.caCert,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", pki.saPub,
		"--service-account-signing-key-file", pki.saKey,
		"--service-cluster-ip-range", c.opts.ServiceCIDR.String(),
		"--authorization-mode", "RBAC",
		// No ServiceAccount admission: without its controller, pods
		// naming a service account would be refused.
		"--disable-admission-plugins", "ServiceAccount",
		"--profiling=false",
	); err != nil {
		return err
	}

	c.rest = &rest.Config{
		Host: "https://" + apiAddr.String(),
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   pki.caPEM,
			CertData: pki.adminCertPEM,
			KeyData:  pki.adminKeyPEM,
		},
		QPS: -1, // no client-side rate limiter
	}
	c.Kubeconfig = filepath.Join(c.dir, "kubeconfig")
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: c.rest.Host, CertificateAuthorityData: pki.caPEM}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: pki.adminCertPEM, ClientKeyData: pki.adminKeyPEM}
	kc.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "admin", Namespace: "default"}
	kc.CurrentContext = "kubetest"
	if err := clientcmd.WriteToFile(*kc, c.Kubeconfig); err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		return err
	}
	c.Client = client
	return c.waitReady()
}

// waitReady polls the apiserver's /readyz until it answers ok.
func (c *Cluster) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for time.Now().Before(deadline) {
		for _, p := range c.procs {
			if p.exited() {
				return fmt.Errorf("%s exited: %v", p.name, p.cmd.ProcessState)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, last = c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		cancel()
		if last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready after %s: %v", readyTimeout, last)
}

// createNode creates the Node every pod is bound to, with an address and
// Ready, as a kubelet would: kube-proxy waits for it, and the EndpointSlice
// controller skips pods of unknown nodes.
func (c *Cluster) createNode(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	node, err := c.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:   c.NodeName,
			Labels: map[string]string{"kubernetes.io/hostname": c.NodeName, "kubernetes.io/os": "linux"},
		},
		Spec: corev1.NodeSpec{PodCIDR: c.opts.ClusterCIDR.String(), PodCIDRs: []string{c.opts.ClusterCIDR.String()}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: creating Node: %v", err)
	}
	now := metav1.Now()
	node.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: c.nodeIP.String()},
		{Type: corev1.NodeHostName, Address: c.NodeName},
	}
	node.Status.Conditions = []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		LastHeartbeatTime: now, LastTransitionTime: now,
	}}
	if _, err := c.Client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("kubetest: writing Node status: %v", err)
	}
}

// start runs one of the binaries, its log in the cluster's directory.
func (c *Cluster) start(name string, in func(*exec.Cmd) error, args ...string) error {
	p, err := startProcess(name, c.dir, in, filepath.Join(c.bin, name), args...)
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	return nil
}

// startProcess is start that fails t.
func (c *Cluster) startProcess(t testing.TB, name string, in func(*exec.Cmd) error, args ...string) {
	t.Helper()
	if err := c.start(name, in, args...); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
}

func (c *Cluster) portTaken() bool {
	for _, p := range c.procs {
		if p.portTaken() {
			return true
		}
	}
	return false
}

// stop is Start's cleanup.
func (c *Cluster) stop(t testing.TB) {
	if t.Failed() {
		for _, p := range c.procs {
			t.Logf("kubetest: end of %s's log (%s):\n%s", p.name, p.logPath, p.tail(logTail))
		}
	}
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.stopProcesses()
}

// stopProcesses stops the processes in the reverse order of their start:
// the apiserver hangs if etcd goes first.
func (c *Cluster) stopProcesses() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop()
	}
}

// freePorts returns n distinct ports free on addr, by letting the kernel
// choose. Another process may take one before the caller binds it: Start
// tries again then.
func freePorts(addr netip.Addr, n int) ([]int, error) {
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		if err != nil {
			return nil, err
		}
		defer ln.Close() // held until all are chosen, so they differ
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
