//go:build linux

package kubetest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/seed722d2a70/meshproxy/test/kubetest"
)

func TestEndpointSlicesFollowPodReadiness(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{ControllerManager: true})
	pod := c.AddPod(t, redisPod("redis-0", true))
	if _, err := c.Client.CoreV1().Services("default").Create(t.Context(), redisService(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	endpoint := func(ctx context.Context) (addr string, ready bool, err error) {
		slices, err := c.Client.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{
			LabelSelector: discoveryv1.LabelServiceName + "=redis",
		})
		if err != nil {
			return "", false, err
		}
		for _, s := range slices.Items {
			if len(s.Ports) != 1 || s.Ports[0].Port == nil {
				continue
			}
			for _, e := range s.Endpoints {
				return fmt.Sprintf("%s:%d", e.Addresses[0], *s.Ports[0].Port), e.Conditions.Ready != nil && *e.Conditions.Ready, nil
			}
		}
		return "", false, fmt.Errorf("no endpoint in %d slices", len(slices.Items))
	}
	want := fmt.Sprintf("%s:6379", pod.IP)
	for _, ready := range []bool{true, false, true} {
		c.SetReady(t, "default", "redis-0", ready)
		waitFor(t, 10*time.Second, func(ctx context.Context) (bool, string) {
			addr, gotReady, err := endpoint(ctx)
			if err != nil {
				return false, err.Error()
			}
			return addr == want && gotReady == ready, fmt.Sprintf("endpoint %s ready=%t, want %s ready=%t", addr, gotReady, want, ready)
		})
	}
}
