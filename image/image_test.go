package image

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// created is the SOURCE_DATE_EPOCH of the test builds.
var created = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// testOptions build for this machine's architecture only (its iptables is
// the installed Debian package), which keeps the tests to one cross-free
// build each.
func testOptions(t *testing.T, version string) Options {
	t.Helper()
	if _, err := os.Stat(xtablesMulti); err != nil {
		msg := "this test needs Debian's iptables (" + xtablesMulti + ", installed by scripts/deps.sh)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	module, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return Options{
		Module:        module,
		Version:       version,
		Revision:      "0123456789abcdef",
		Source:        "https://github.com/seed722d2a70/meshproxy",
		Created:       created,
		Platforms:     []string{runtime.GOARCH},
		IptablesRoots: map[string]string{runtime.GOARCH: "/"},
		WorkDir:       t.TempDir(),
	}
}

func TestTwoBuildsOfTheSameSourceHaveTheSameDigests(t *testing.T) {
	ctx := context.Background()
	var digests [2][2]v1.Hash
	for i := range digests {
		imgs, err := Build(ctx, testOptions(t, "v0.0.0-test"))
		if err != nil {
			t.Fatal(err)
		}
		for j, idx := range []v1.ImageIndex{imgs.Proxy, imgs.Controller} {
			if digests[i][j], err = idx.Digest(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if digests[0] != digests[1] {
		t.Errorf("digests differ between builds: %v, then %v", digests[0], digests[1])
	}
}

func TestImagesRunAsUID2102WithLabelsAndSourceDateTimes(t *testing.T) {
	imgs, err := Build(context.Background(), testOptions(t, "v1.2.3"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range imgs.Named(DefaultRepository, "v1.2.3") {
		m, err := n.Index.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Manifests) != 1 || m.Manifests[0].Platform == nil ||
			m.Manifests[0].Platform.Architecture != runtime.GOARCH || m.Manifests[0].Platform.OS != "linux" {
			t.Fatalf("%s: index lists %+v, want one linux/%s manifest", n.Name, m.Manifests, runtime.GOARCH)
		}
		img, err := n.Index.Image(m.Manifests[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Config.User != "2102:2102" || !slices.Equal(cfg.Config.Entrypoint, []string{"/meshproxy"}) {
			t.Errorf("%s: user %q, entrypoint %q; want 2102:2102, [/meshproxy]", n.Name, cfg.Config.User, cfg.Config.Entrypoint)
		}
		if !cfg.Created.Time.Equal(created) {
			t.Errorf("%s: created %v, want %v", n.Name, cfg.Created.Time, created)
		}
		want := map[string]string{
			"org.opencontainers.image.title":    n.Name,
			"org.opencontainers.image.version":  "v1.2.3",
			"org.opencontainers.image.revision": "0123456789abcdef",
			"org.opencontainers.image.source":   "https://github.com/seed722d2a70/meshproxy",
			"org.opencontainers.image.created":  "2026-01-02T03:04:05Z",
		}
		for k, v := range want {
			if got := cfg.Config.Labels[k]; got != v {
				t.Errorf("%s: label %s = %q, want %q", n.Name, k, got, v)
			}
		}
		files := layerFiles(t, img)
		if files["meshproxy"].Mode&0o111 == 0 {
			t.Errorf("%s: /meshproxy missing or not executable", n.Name)
		}
		wantIptables := n.Name == ProxyName
		if _, ok := files["usr/sbin/iptables-restore"]; ok != wantIptables {
			t.Errorf("%s: has iptables-restore: %v, want %v", n.Name, ok, wantIptables)
		}
		for name, h := range files {
			if !h.ModTime.Equal(created) || h.Uid != 0 || h.Gid != 0 {
				t.Errorf("%s: %s has mtime %v, owner %d:%d; want %v, 0:0", n.Name, name, h.ModTime, h.Uid, h.Gid, created)
			}
		}
	}
}

// layerFiles returns the tar headers of every layer of img, by path.
func layerFiles(t *testing.T, img v1.Image) map[string]*tar.Header {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]*tar.Header{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = h
		}
		rc.Close()
	}
	return files
}
