//go:build linux

package kubetest_test

import (
	"context"
	"io"
	"net"
	"net/url"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seed722d2a70/meshproxy/test/kubetest"
)

// A client pod reaches a server pod through a Service's ClusterIP and
// port, translated to the pod's IP and named port by kube-proxy's own
// iptables rules in the node.
func TestKubeProxyTakesClusterIPToPod(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{KubeProxy: true})
	server := c.AddPod(t, redisPod("redis-0", true))
	client := c.AddPod(t, kubetest.PodSpec{Name: "client", Ready: true})
	svc, err := c.Client.CoreV1().Services("default").Create(t.Context(), redisService(), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	ln, err := server.NS.Listen("tcp", ":6379")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peers := make(chan net.Addr, 10)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			peers <- conn.RemoteAddr()
			go func() {
				defer conn.Close()
				_, _ = io.Copy(conn, conn)
			}()
		}
	}()

	vip := net.JoinHostPort(svc.Spec.ClusterIP, "6380")
	var conn net.Conn
	// kube-proxy programs the Service within a second or so of its
	// EndpointSlice; until then the ClusterIP is refused.
	waitFor(t, 15*time.Second, func(ctx context.Context) (bool, string) {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		conn, err = client.NS.DialContext(dctx, "tcp", vip)
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	defer conn.Close()
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 6)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "PING\r\n" {
		t.Fatalf("echo through %s: %q, %v", vip, buf, err)
	}
	// The server saw the client pod itself: DNAT only, no masquerade.
	if peer := (<-peers).(*net.TCPAddr); peer.AddrPort().Addr().Unmap() != client.IP {
		t.Errorf("server saw %s, want the client pod %s", peer, client.IP)
	}

	// The apiserver is reachable from the pods too, at the kubeconfig's
	// address.
	u, err := url.Parse(c.RESTConfig().Host)
	if err != nil {
		t.Fatal(err)
	}
	api, err := client.NS.DialContext(t.Context(), "tcp", u.Host)
	if err != nil {
		t.Fatalf("from the client pod to the apiserver: %v", err)
	}
	api.Close()
	if !kubetest.DefaultClusterCIDR.Contains(server.IP) || server.IP == client.IP {
		t.Errorf("pod IPs %s and %s, want two in %s", server.IP, client.IP, kubetest.DefaultClusterCIDR)
	}
}
