// Package kubetest runs a real Kubernetes control plane for tests: etcd and
// kube-apiserver, and on demand kube-controller-manager (its EndpointSlice
// controller only) and kube-proxy (iptables mode) in a network namespace
// playing the node. There is no kubelet and no scheduler: [Cluster.AddPod]
// creates a Pod bound to the node, gives it a network namespace of its own
// when kube-proxy runs, and writes its status (Running, its IP, Ready or
// not) as a kubelet would. Anything in meshproxy that talks to Kubernetes is
// tested against this rather than a fake client.
//
// [Start] takes about 5 s on two cores and stops everything when the test
// ends, even if it fails, printing the end of every process's log then.
//
// # Addresses
//
// Without kube-proxy, etcd and kube-apiserver listen on free loopback
// ports of the host namespace, and no root is needed. With kube-proxy (root
// only: [netns.Require] skips the test otherwise, or fails it under CI), a
// veth pair joins the host namespace to the node's, on a /30 drawn at
// random from 198.18.0.0/15 (the benchmarking range, unused by real
// networks) and checked against the host's addresses; the apiserver binds
// to the host end, so the test process, the node and every pod reach it at
// the same address. Pods get a veth pair to the node with a /30 of the
// cluster CIDR and a default route via the node, so their packets to a
// Service's ClusterIP pass the node's PREROUTING chain, where kube-proxy's
// DNAT rules are; the node masquerades pods' packets to the apiserver.
//
// # Binaries
//
// The binaries are found in $MESHPROXY_KUBE_DIR (default
// <repo>/.cache/kubernetes, where scripts/deps.sh puts them) and, when
// missing there, installed by $MESHPROXY_SHARED_DIR/kubernetes/install.sh
// (default <repo>/../shared); see [Binaries].
package kubetest
