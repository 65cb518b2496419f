package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The sidecar build, which runs in every pod, links none of the
// Kubernetes tools: their package initialization alone costs 4 MiB of
// idle RSS (bench/results.md, idle RSS).
func TestSidecarBuildLeavesOutKubernetes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	for _, tags := range []string{"sidecar", ""} {
		out, err := exec.Command("go", "list", "-tags", tags, "-deps", ".").CombinedOutput()
		if err != nil {
			t.Fatalf("go list -tags %q: %v\n%s", tags, err, out)
		}
		var kube []string
		for p := range strings.FieldsSeq(string(out)) {
			if strings.HasPrefix(p, "k8s.io/") || strings.HasSuffix(p, "/meshproxy/inject") || strings.HasSuffix(p, "/meshproxy/netpol") {
				kube = append(kube, p)
			}
		}
		switch {
		case tags == "sidecar" && len(kube) > 0:
			t.Errorf("the sidecar build links %d Kubernetes packages, e.g. %s", len(kube), kube[0])
		case tags == "" && len(kube) == 0:
			t.Error("the full build links no Kubernetes packages: is inject still in it?")
		}
	}
}
