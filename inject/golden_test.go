package inject_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/internal/manifest"
)

var update = flag.Bool("update", false, "rewrite the .golden files from the current output")

// goldenCase is one input manifest run through inject with a configuration.
type goldenCase struct {
	input  string // testdata/NAME.yaml
	golden string // testdata/NAME.golden
	cfg    func(*inject.Config)
	opts   inject.StreamOptions
}

func goldenCases() []goldenCase {
	return []goldenCase{
		{input: "redis-statefulset", golden: "redis-statefulset"},
		{input: "web-deployment", golden: "web-deployment"},
		{input: "web-deployment", golden: "web-deployment.regular", cfg: func(c *inject.Config) { c.NativeSidecar = false }},
		{input: "cronjob", golden: "cronjob"},
		{input: "cronjob", golden: "cronjob.hostpath", cfg: func(c *inject.Config) { c.Socket = inject.SocketHostPath }},
		{input: "pod", golden: "pod"},
		{input: "multi", golden: "multi"},
		{input: "multi", golden: "multi.webhook-policy", opts: inject.StreamOptions{Policy: inject.WhenEnabled}},
		{input: "list", golden: "list"},
		{input: "disabled", golden: "disabled"},
		{input: "already-injected", golden: "already-injected"},
		{input: "already-injected", golden: "already-injected.uninject", opts: inject.StreamOptions{Uninject: true}},
	}
}

func newInjector(t *testing.T, edit func(*inject.Config)) *inject.Injector {
	t.Helper()
	cfg := inject.DefaultConfig()
	if edit != nil {
		edit(&cfg)
	}
	in, err := inject.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGolden compares inject's output with the .golden files (go test
// -update rewrites them), checks that every output document decodes strictly
// into its k8s.io/api type, and that injecting the output again changes
// nothing.
func TestGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.golden, func(t *testing.T) {
			in := newInjector(t, tc.cfg)
			input := readFile(t, filepath.Join("testdata", tc.input+".yaml"))
			got, _, err := in.Stream(input, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.golden+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if want := readFile(t, path); !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (go test -update rewrites it):\n%s", path, inject.Diff(path, "got", want, got))
			}
			if err := manifest.CheckStrict(got); err != nil {
				t.Errorf("output does not decode strictly: %v", err)
			}
			again, results, err := in.Stream(got, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, got) {
				t.Errorf("second pass changed the output:\n%s", inject.Diff("once", "twice", got, again))
			}
			for _, r := range results {
				if r.Action == inject.ActionInjected || r.Action == inject.ActionUninjected {
					t.Errorf("second pass: %s %s", r.Object, r.Action)
				}
			}
		})
	}
}
