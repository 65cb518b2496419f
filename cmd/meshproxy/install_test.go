//go:build !sidecar && linux

package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/seed722d2a70/meshproxy/check"
	"github.com/seed722d2a70/meshproxy/internal/manifest"
	"github.com/seed722d2a70/meshproxy/test/kubetest"
)

func TestInstallCommandFlags(t *testing.T) {
	ctx := context.Background()
	out, stderr, err := runCmd(t, ctx, "install", "-namespace", "mesh", "-proxy-image", "example/proxy:v2", "-socket", "hostpath",
		"-memory-limit=", "-proxy-cpu-request", "20m")
	if err != nil {
		t.Fatal(err, stderr)
	}
	if err := manifest.CheckStrict([]byte(out)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"- -destination-addr=meshproxy-destination.mesh.svc.cluster.local:8086\n",
		"- -image=example/proxy:v2\n", "- -socket=hostpath\n", "- -proxy-cpu-request=20m\n",
		"caBundle: ", "  tls.key: ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("install output lacks %q", want)
		}
	}
	if strings.Contains(out, "memory: 512Mi") {
		t.Error("-memory-limit= left the default limit")
	}
	out, _, err = runCmd(t, ctx, "install", "-cert-manager")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "kind: Certificate\n") || strings.Contains(out, "caBundle") || strings.Contains(out, "kind: Secret\n") {
		t.Errorf("-cert-manager output:\n%s", out)
	}
	out, _, err = runCmd(t, ctx, "uninstall", "-namespace", "mesh")
	if err != nil {
		t.Fatal(err)
	}
	if err := manifest.CheckStrict([]byte(out)); err != nil || !strings.Contains(out, "name: mesh-destination\n") {
		t.Errorf("uninstall output (%v):\n%s", err, out)
	}
	for _, bad := range [][]string{
		{"install", "-socket", "nfs"},
		{"install", "-image-pull-policy", "Sometimes"},
		{"install", "-replicas", "0"},
		{"install", "-memory-request", "lots"},
		{"install", "extra"},
		{"check", "-output", "yaml"},
	} {
		if _, _, err := runCmd(t, ctx, bad...); err == nil || exitCode(err) != 2 {
			t.Errorf("%q: error %v", bad, err)
		}
	}
}

// TestInstallReuseTLSAndCheckCommands runs the commands against a real
// apiserver: install -reuse-tls makes a certificate when the cluster has
// none and keeps the cluster's afterwards (the same output again), and check
// exits 1 with a JSON list while the control plane is not ready.
func TestInstallReuseTLSAndCheckCommands(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{})
	ctx := context.Background()
	first, stderr, err := runCmd(t, ctx, "install", "-reuse-tls", "-kubeconfig", c.Kubeconfig)
	if err != nil {
		t.Fatal(err, stderr)
	}
	c.Apply(t, first)
	again, _, err := runCmd(t, ctx, "install", "-reuse-tls", "-kubeconfig", c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if again != first {
		t.Error("install -reuse-tls renders another output than the one applied")
	}
	for l := range strings.SplitSeq(strings.TrimSpace(c.Apply(t, again)), "\n") {
		if !strings.HasSuffix(l, " unchanged") {
			t.Errorf("applying install -reuse-tls again: %q", l)
		}
	}

	out, _, err := runCmd(t, ctx, "check", "-kubeconfig", c.Kubeconfig, "-output", "json")
	if exitCode(err) != 1 {
		t.Fatalf("check: error %v, want exit 1", err)
	}
	var parsed struct {
		Success bool           `json:"success"`
		Checks  []check.Result `json:"checks"`
	}
	if err := json.Unmarshal([]byte(out), &parsed); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	failed := map[string]bool{}
	for _, r := range parsed.Checks {
		if !r.OK {
			failed[r.Name] = true
		}
	}
	if parsed.Success || !failed["control-plane-ready"] || failed["control-plane-objects"] || failed["webhook-ca"] {
		t.Errorf("check results:\n%s", out)
	}
	text, _, _ := runCmd(t, ctx, "check", "-kubeconfig", c.Kubeconfig)
	if !strings.Contains(text, "× the control plane's pods are ready\n") || !strings.Contains(text, "#check-control-plane-ready\n") {
		t.Errorf("text output:\n%s", text)
	}
	t.Logf("check output:\n%s", text)
}
