// Package kubernetes_test keeps the example manifests honest: they decode
// strictly into the k8s.io/api types, and the injected and fixed files are
// exactly what meshproxy inject and meshproxy netpol -fix produce today.
package kubernetes_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/internal/manifest"
	"github.com/seed722d2a70/meshproxy/netpol"
)

var update = flag.Bool("update", false, "rewrite the generated examples")

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// compare checks got against the file name, or rewrites it with -update.
func compare(t *testing.T, name string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(name, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want := read(t, name); !bytes.Equal(got, want) {
		t.Errorf("%s is stale (go test -update rewrites it):\n%s", name, inject.Diff(name, "now", want, got))
	}
}

func TestExamplesDecodeStrictly(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) < 6 {
		t.Fatalf("examples %v %v", files, err)
	}
	for _, f := range files {
		if err := manifest.CheckStrict(read(t, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestInjectedExample(t *testing.T) {
	in, err := inject.New(inject.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	out, results, err := in.Stream(read(t, "app.yaml"), inject.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 || results[0].Action != inject.ActionInjected || results[1].Action != inject.ActionInjected {
		t.Errorf("results %+v", results)
	}
	compare(t, "app-injected.yaml", out)

	// The SPIRE and CSI driver pods stay out of the mesh.
	for _, f := range []string{"spire-server.yaml", "spire-agent.yaml", "spiffe-csi-driver.yaml", "injector.yaml"} {
		src := read(t, f)
		out, _, err := in.Stream(src, inject.StreamOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, src) {
			t.Errorf("%s would be injected", f)
		}
	}
}

func TestFixedNetworkPolicyExample(t *testing.T) {
	o := netpol.DefaultOptions()
	o.Fix = true
	rep, err := netpol.Check([]netpol.Input{
		{Name: "networkpolicy.yaml", Data: read(t, "networkpolicy.yaml")},
		{Name: "app.yaml", Data: read(t, "app.yaml")},
	}, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 {
		t.Fatalf("problems %v, want the policy's one rule", rep.Problems)
	}
	compare(t, "networkpolicy-fixed.yaml", rep.Outputs[0])

	// The fixed policy passes against the injected app too.
	o.Fix = false
	rep, err = netpol.Check([]netpol.Input{
		{Name: "networkpolicy-fixed.yaml", Data: read(t, "networkpolicy-fixed.yaml")},
		{Name: "app-injected.yaml", Data: read(t, "app-injected.yaml")},
	}, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 {
		t.Errorf("problems with the fixed policy: %v", rep.Problems)
	}
}
