package install_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/install"
	"github.com/seed722d2a70/meshproxy/internal/manifest"
)

var update = flag.Bool("update", false, "rewrite the .golden files from the current output")

// secretMaterial matches what changes from one install to the next: the
// generated key, certificate and CA.
var secretMaterial = regexp.MustCompile(`(?m)^(\s*(?:tls\.crt|tls\.key|ca\.crt|caBundle)): \S+$`)

func mask(b []byte) []byte { return secretMaterial.ReplaceAll(b, []byte("$1: <masked>")) }

func newTLS(t *testing.T, o install.Options) *install.TLS {
	t.Helper()
	tls, err := install.NewTLS(o.InjectorDNSNames(), time.Now(), install.DefaultCertValidity)
	if err != nil {
		t.Fatal(err)
	}
	return tls
}

// TestManifestsMatchGolden renders each variant, masks the TLS material,
// and compares with testdata (go test -update rewrites it). Every document
// must decode strictly into its Go type.
func TestManifestsMatchGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts func(*install.Options)
	}{
		{"default", func(*install.Options) {}},
		{"cert-manager", func(o *install.Options) { o.CertManager, o.TLS = true, nil }},
		{"hostpath", func(o *install.Options) {
			o.Namespace, o.Socket, o.TrustDomain, o.Replicas = "mesh-system", inject.SocketHostPath, "example.org", 2
			o.Image, o.ProxyImage = "registry.example/meshproxy:v1", "registry.example/meshproxy-sidecar:v1"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := install.DefaultOptions()
			o.TLS = newTLS(t, o)
			tc.opts(&o)
			got, err := install.Manifests(o)
			if err != nil {
				t.Fatal(err)
			}
			again, err := install.Manifests(o)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, again) {
				t.Error("two renderings of the same options differ")
			}
			checkStrict(t, got)
			got = mask(got)
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (go test -update rewrites it):\n%s", path, inject.Diff(path, "got", want, got))
			}
		})
	}
}

// checkStrict decodes every document strictly: k8s.io/api kinds into their
// types, cert-manager's into install.Object.
func checkStrict(t *testing.T, stream []byte) {
	t.Helper()
	docs, err := manifest.Read(bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range docs {
		h, err := manifest.ReadHeader(d.Body)
		if err != nil {
			t.Fatal(err)
		}
		obj, ok := manifest.NewObject(h.GVK())
		if h.APIVersion == "cert-manager.io/v1" {
			obj, ok = &install.Object{}, true
		}
		if !ok {
			t.Errorf("document %d: kind %s unknown", i+1, h.GVK())
			continue
		}
		if err := manifest.DecodeStrict(d.Body, obj); err != nil {
			t.Errorf("document %d (%s): %v", i+1, h, err)
		}
	}
}

func TestInjectorIsGivenTheDestinationAddress(t *testing.T) {
	o := install.DefaultOptions()
	o.Namespace, o.ProxyImage, o.TLS = "mesh", "example/proxy:v2", newTLS(t, o)
	out, err := install.Manifests(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"- -destination-addr=meshproxy-destination.mesh.svc.cluster.local:8086\n",
		"- -image=example/proxy:v2\n",
		"- -socket=csi\n",
		"caBundle: ",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no %q in the output", want)
		}
	}
}

func TestOptionsAreValidated(t *testing.T) {
	for name, f := range map[string]func(*install.Options){
		"no TLS":       func(o *install.Options) { o.TLS = nil },
		"no namespace": func(o *install.Options) { o.Namespace = "" },
		"no replicas":  func(o *install.Options) { o.Replicas = 0 },
		"bad socket":   func(o *install.Options) { o.Socket = "nfs" },
		// The proxies are told the controller's ID, which names it.
		"no trust domain":  func(o *install.Options) { o.TrustDomain = "" },
		"bad trust domain": func(o *install.Options) { o.TrustDomain = "Mesh Local" },
	} {
		o := install.DefaultOptions()
		o.TLS = &install.TLS{}
		f(&o)
		if _, err := install.Manifests(o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestUninstallNamesWhatInstallMakes(t *testing.T) {
	o := install.DefaultOptions()
	o.TLS = newTLS(t, o)
	in, err := install.Objects(o)
	if err != nil {
		t.Fatal(err)
	}
	out, err := install.UninstallManifests(o)
	if err != nil {
		t.Fatal(err)
	}
	checkStrict(t, out)
	if bytes.Contains(out, []byte("tls.key")) || bytes.Contains(out, []byte("caBundle")) {
		t.Errorf("uninstall output carries key material:\n%s", out)
	}
	docs, err := manifest.Read(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != len(in) {
		t.Fatalf("%d objects to delete, %d installed", len(docs), len(in))
	}
	first, _ := manifest.ReadHeader(docs[0].Body)
	last, _ := manifest.ReadHeader(docs[len(docs)-1].Body)
	if first.Kind != "MutatingWebhookConfiguration" || last.Kind != "Namespace" {
		t.Errorf("deleted first %s, last %s; want the webhook first and the namespace last", first, last)
	}
}

func TestServingCertificateVerifies(t *testing.T) {
	o := install.DefaultOptions()
	tls, other := newTLS(t, o), newTLS(t, o)
	now := time.Now()
	for _, name := range o.InjectorDNSNames() {
		if err := install.VerifyServing(tls.CertPEM, tls.CAPEM, name, now); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, err := range map[string]error{
		"other CA":     install.VerifyServing(tls.CertPEM, other.CAPEM, o.InjectorDNSNames()[0], now),
		"other name":   install.VerifyServing(tls.CertPEM, tls.CAPEM, "evil.meshproxy.svc", now),
		"expired":      install.VerifyServing(tls.CertPEM, tls.CAPEM, o.InjectorDNSNames()[0], now.Add(2*install.DefaultCertValidity)),
		"no bundle":    install.VerifyServing(tls.CertPEM, nil, o.InjectorDNSNames()[0], now),
		"no cert file": install.VerifyServing(nil, tls.CAPEM, o.InjectorDNSNames()[0], now),
	} {
		if !errors.Is(err, install.ErrCertMismatch) {
			t.Errorf("%s: %v, want ErrCertMismatch", name, err)
		}
	}
}
