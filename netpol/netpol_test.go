package netpol_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/internal/manifest"
	"github.com/seed722d2a70/meshproxy/netpol"
)

var update = flag.Bool("update", false, "rewrite the .golden files from the current output")

func read(t *testing.T, name string) netpol.Input {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return netpol.Input{Name: name, Data: b}
}

func problemLines(r *netpol.Report) []string {
	var out []string
	for _, p := range r.Problems {
		out = append(out, p.String())
	}
	return out
}

// TestGolden runs the check with --fix over each testdata manifest and
// compares the problems and the fixed manifests with NAME.golden.
func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*netpol.Options)
		fixed string
	}{
		{"seed", nil, "seed"},
		{"seed", func(o *netpol.Options) { o.AllowAdmin = true }, "seed.admin"},
		{"mixed", nil, "mixed"},
		{"named", nil, "named"},
		{"unmeshed", nil, "unmeshed"},
		{"unmeshed", func(o *netpol.Options) { o.MeshedByDefault = true }, "unmeshed.meshed-by-default"},
		{"list", nil, "list"},
		{"egress", nil, "egress"},
		{"services", nil, "services"},
		{"services", func(o *netpol.Options) { o.Controller = true }, "services.controller"},
		{"mixed", func(o *netpol.Options) { o.Controller = true }, "mixed.controller"},
	} {
		t.Run(tc.fixed, func(t *testing.T) {
			o := netpol.DefaultOptions()
			o.Fix = true
			if tc.edit != nil {
				tc.edit(&o)
			}
			rep, err := netpol.Check([]netpol.Input{read(t, tc.name+".yaml")}, o)
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			got.WriteString("# problems\n")
			for _, l := range problemLines(rep) {
				got.WriteString("# " + l + "\n")
			}
			got.WriteString("# fixed manifests\n")
			got.Write(rep.Outputs[0])
			path := filepath.Join("testdata", tc.fixed+".golden")
			if *update {
				if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("differs from %s (go test -update rewrites it):\n%s", path, inject.Diff(path, "got", want, got.Bytes()))
			}
			if err := manifest.CheckStrict(rep.Outputs[0]); err != nil {
				t.Errorf("fixed output does not decode strictly: %v", err)
			}
			// Checking the fixed output finds nothing left to fix.
			o.Fix = false
			again, err := netpol.Check([]netpol.Input{{Name: "fixed", Data: rep.Outputs[0]}}, o)
			if err != nil {
				t.Fatal(err)
			}
			if again.Unfixed() {
				t.Errorf("problems after fixing: %q", problemLines(again))
			}
		})
	}
}

// TestProblems states what each case must find, independent of the golden
// files' formatting.
func TestProblems(t *testing.T) {
	tests := []struct {
		file string
		edit func(*netpol.Options)
		want []string // "policy rule ports pods"
	}{
		{"seed.yaml", nil, []string{"cache/redis-from-web Ingress 0 6379 StatefulSet cache/redis"}},
		// HTTP goes to 4143 like everything meshed; a scrape-only rule
		// for the admin port is left alone.
		{"mixed.yaml", nil, []string{
			"shop/store-ingress Ingress 0 8080 Deployment shop/store",
			"shop/store-ingress Ingress 1 5432,8080 Deployment shop/store",
			"shop/store-egress Egress 0 5432 Deployment shop/store",
		}},
		{"named.yaml", nil, []string{"data/cache-named Ingress 0 6379 Pod data/cache", "data/cache-named Ingress 1 26000-26999 Pod data/cache"}},
		{"unmeshed.yaml", nil, nil},
		{"list.yaml", nil, []string{"db/postgres-from-app Ingress 0 5432 Deployment db/postgres"}},
		{"unmeshed.yaml", func(o *netpol.Options) { o.MeshedByDefault = true }, []string{"legacy/redis Ingress 0 6379 Deployment legacy/redis"}},
		// Egress of meshed clients toward meshed pods; DNS anywhere, an
		// ipBlock and an unmeshed client's policy are left alone.
		{"egress.yaml", nil, []string{
			"shop/web-egress Egress 0 5432 StatefulSet shop/db",
			"shop/web-egress Egress 3 8080 Deployment shop/web",
		}},
	}
	controller := func(o *netpol.Options) { o.Controller = true }
	tests = append(tests, []struct {
		file string
		edit func(*netpol.Options)
		want []string
	}{
		// Meshed networks only: every admitted port of a meshed pod.
		{"services.yaml", nil, []string{
			"shop/web Ingress 0 8080 Deployment shop/web",
			"shop/nats Ingress 0 4222 Deployment shop/nats",
			"shop/db Ingress 0 13306 Deployment shop/db",
			"shop/cache Ingress 0 6379 Deployment shop/cache",
			"shop/cache Ingress 1 7000 Deployment shop/cache",
		}},
		// With the controller, only the opaque ones: HTTP keeps its
		// port; 4222 by the Service's annotation, 13306 through the
		// Service's port 3306, 7000 by the pod's annotation, which also
		// takes 6379 off the default list.
		{"services.yaml", controller, []string{
			"shop/nats Ingress 0 4222 Deployment shop/nats",
			"shop/db Ingress 0 13306 Deployment shop/db",
			"shop/cache Ingress 1 7000 Deployment shop/cache",
		}},
		{"mixed.yaml", controller, []string{
			"shop/store-ingress Ingress 1 5432 Deployment shop/store",
			"shop/store-egress Egress 0 5432 Deployment shop/store",
		}},
	}...)
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			o := netpol.DefaultOptions()
			if tc.edit != nil {
				tc.edit(&o)
			}
			in := read(t, tc.file)
			rep, err := netpol.Check([]netpol.Input{in}, o)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range rep.Problems {
				got = append(got, strings.Join([]string{p.Policy, string(p.Direction), string(rune('0' + p.Rule)), p.Ports.String(), strings.Join(p.Pods, ",")}, " "))
				if p.Fixed {
					t.Errorf("fixed without Fix: %v", p)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("problems\n%q\nwant\n%q", got, tc.want)
			}
			if rep.Unfixed() != (len(tc.want) > 0) {
				t.Errorf("Unfixed() = %v", rep.Unfixed())
			}
			if !bytes.Equal(rep.Outputs[0], in.Data) {
				t.Errorf("output changed without Fix")
			}
		})
	}
}

// TestAcrossFiles checks that policies and the workloads they select may
// be in different files, and only the policy's file changes.
func TestAcrossFiles(t *testing.T) {
	seed := read(t, "seed.yaml")
	docs, err := manifest.Read(bytes.NewReader(seed.Data))
	if err != nil {
		t.Fatal(err)
	}
	var workload, policy bytes.Buffer
	if err := manifest.Write(&workload, docs[:1]); err != nil {
		t.Fatal(err)
	}
	docs[1].Sep = ""
	if err := manifest.Write(&policy, docs[1:]); err != nil {
		t.Fatal(err)
	}
	o := netpol.DefaultOptions()
	o.Fix = true
	rep, err := netpol.Check([]netpol.Input{{Name: "policy.yaml", Data: policy.Bytes()}, {Name: "redis.yaml", Data: workload.Bytes()}}, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || rep.Problems[0].File != "policy.yaml" || !rep.Problems[0].Fixed {
		t.Fatalf("problems %q", problemLines(rep))
	}
	if !bytes.Equal(rep.Outputs[1], workload.Bytes()) {
		t.Errorf("the workload file changed")
	}
	if !strings.Contains(string(rep.Outputs[0]), "port: 4143") {
		t.Errorf("policy not fixed:\n%s", rep.Outputs[0])
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct{ name, input string }{
		{"unknown field in policy", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelectr: {}}\n"},
		{"bad selector", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: {matchExpressions: [{key: a, operator: Near}]}}\n"},
		{"bad pod annotation", "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {meshproxy.io/inject: maybe}}\nspec: {containers: []}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := netpol.Check([]netpol.Input{{Name: "x", Data: []byte(tc.input)}}, netpol.DefaultOptions())
			if err == nil {
				t.Fatal("no error")
			}
			if tc.name == "unknown field in policy" && !errors.Is(err, manifest.ErrDecode) {
				t.Errorf("error %v, want ErrDecode", err)
			}
		})
	}
}
