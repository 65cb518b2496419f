//go:build linux

package kubetest

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/test/netns"
)

// When the test that started a cluster ends, none of its processes, network
// namespaces or listening ports are left.
func TestCleanupLeavesNothingBehind(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"control plane", Options{ControllerManager: true}},
		{"with kube-proxy", Options{KubeProxy: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.opts.KubeProxy {
				netns.Require(t, "iptables")
			}
			var (
				pids       []int
				namespaces []string
				apiserver  string
				dir        string
			)
			t.Run("cluster", func(t *testing.T) {
				c := Start(t, tc.opts)
				pod := c.AddPod(t, PodSpec{Name: "web", Ready: true})
				for _, p := range c.procs {
					pids = append(pids, p.cmd.Process.Pid)
				}
				if c.Node != nil {
					namespaces = append(namespaces, c.Node.Name, pod.NS.Name)
				}
				apiserver = c.rest.Host[len("https://"):]
				dir = c.dir
			})
			want := 3
			if tc.opts.KubeProxy {
				want = 4
			}
			if len(pids) != want {
				t.Fatalf("%d processes ran, want %d", len(pids), want)
			}
			for _, pid := range pids {
				if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
					t.Errorf("process %d still exists (kill 0: %v)", pid, err)
				}
			}
			for _, ns := range namespaces {
				if _, err := os.Stat("/run/netns/" + ns); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("network namespace %s still exists (%v)", ns, err)
				}
			}
			if conn, err := net.DialTimeout("tcp", apiserver, time.Second); err == nil {
				conn.Close()
				t.Errorf("something still listens on the apiserver's address %s", apiserver)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the cluster's directory %s still exists (%v)", dir, err)
			}
		})
	}
}
