// Package image builds meshproxy's container images without a container
// daemon: Go cross-compiles the binaries, go-containerregistry assembles the
// layers, configs and per-platform indexes, and the result is written as an
// OCI layout and archive (or pushed to a registry).
//
// Two images are built, each an index over linux/amd64 and linux/arm64:
//   - the proxy image, the sidecar build at /meshproxy with Debian's
//     nft-backend iptables beside it for the init step (docs/images.md says
//     why), run as UID 2102;
//   - the controller image, the full build at /meshproxy, for
//     `meshproxy destination` and `meshproxy injector`, also non-root.
//
// Builds are reproducible: every timestamp (file mtimes, the config's
// created time, the created label) is Options.Created, usually
// SOURCE_DATE_EPOCH, so a commit gives the same digests wherever it is built.
package image

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/seed722d2a70/meshproxy/internal/release"
)

// Names of the images, after the repository prefix.
const (
	ProxyName      = release.ProxyName
	ControllerName = release.ControllerName
)

// DefaultRepository is where the project publishes its images.
const DefaultRepository = release.Repository

// UID is the user both images run as; the proxy's is the one `meshproxy
// init` exempts from redirection (netinit.DefaultProxyUID).
const UID = 2102

// DefaultPlatforms are the architectures every image is built for.
var DefaultPlatforms = []string{"amd64", "arm64"}

// Options say what to build.
type Options struct {
	// Module is the directory of meshproxy's go.mod.
	Module string
	// Go is the go command; "go" when empty.
	Go string
	// Version is stamped into the binaries (release.Version), the tag and the
	// version label.
	Version string
	// Revision is the commit, for the revision label.
	Revision string
	// Source is the repository URL, for the source label.
	Source string
	// Created is every timestamp in the images.
	Created time.Time
	// Platforms are GOARCH values; DefaultPlatforms when empty.
	Platforms []string
	// IptablesRoots are, by GOARCH, the Debian trees from which the proxy
	// image's iptables is taken: "/" for the machine's own architecture, or
	// packages unpacked with dpkg-deb -x (scripts/image-deps.sh). Every
	// platform needs one.
	IptablesRoots map[string]string
	// WorkDir holds the compiled binaries; a temporary directory, removed
	// afterwards, when empty.
	WorkDir string
}

// Images are the built indexes.
type Images struct {
	Proxy, Controller v1.ImageIndex
}

// Build compiles the binaries for every platform and assembles both images.
func Build(ctx context.Context, o Options) (*Images, error) {
	if o.Go == "" {
		o.Go = "go"
	}
	if len(o.Platforms) == 0 {
		o.Platforms = DefaultPlatforms
	}
	if o.WorkDir == "" {
		dir, err := os.MkdirTemp("", "meshimage-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		o.WorkDir = dir
	}
	proxy := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	controller := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range o.Platforms {
		root, ok := o.IptablesRoots[arch]
		if !ok {
			return nil, fmt.Errorf("image: no iptables root for linux/%s", arch)
		}
		ipt, err := iptablesEntries(root, arch)
		if err != nil {
			return nil, fmt.Errorf("image: linux/%s: %w", arch, err)
		}
		bin, err := o.compile(ctx, arch, "sidecar")
		if err != nil {
			return nil, err
		}
		img, err := o.image(arch, ProxyName, "the meshproxy sidecar and its init step", [][]entry{ipt, bin})
		if err != nil {
			return nil, err
		}
		proxy = mutate.AppendManifests(proxy, addendum(img, arch))

		if bin, err = o.compile(ctx, arch, ""); err != nil {
			return nil, err
		}
		if img, err = o.image(arch, ControllerName, "the meshproxy control plane: destination and injector", [][]entry{bin}); err != nil {
			return nil, err
		}
		controller = mutate.AppendManifests(controller, addendum(img, arch))
	}
	return &Images{Proxy: proxy, Controller: controller}, nil
}

// compile builds cmd/meshproxy statically (CGO_ENABLED=0, so that no libc
// is needed) for linux/arch with the build tags, and returns it as the
// image's /meshproxy.
func (o Options) compile(ctx context.Context, arch, tags string) ([]entry, error) {
	out := filepath.Join(o.WorkDir, "meshproxy-"+arch+"-"+tags)
	cmd := exec.CommandContext(ctx, o.Go, "build", "-trimpath", "-buildvcs=false", "-tags", tags,
		"-ldflags", "-s -w "+release.VersionFlag(o.Version), "-o", out, "./cmd/meshproxy")
	cmd.Dir = o.Module
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("image: go build linux/%s (tags %q): %w: %s", arch, tags, err, msg)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	return []entry{
		{Path: "/meshproxy", Mode: 0o755, Data: data},
		// Mount points for an emptyDir: iptables' lock under a read-only
		// root (inject.XtablesVolumeName), and scratch space.
		{Path: "/run", Dir: true, Mode: 0o755},
		{Path: "/tmp", Dir: true, Mode: 0o1777},
	}, nil
}

// image assembles one platform's image from layers (bottom first).
func (o Options) image(arch, name, description string, layers [][]entry) (v1.Image, error) {
	created := v1.Time{Time: o.Created.UTC()}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for _, entries := range layers {
		l, err := layer(entries, o.Created)
		if err != nil {
			return nil, err
		}
		if img, err = mutate.Append(img, mutate.Addendum{
			Layer:     l,
			MediaType: types.OCILayer,
			History:   v1.History{Created: created, CreatedBy: "meshimage", Comment: name},
		}); err != nil {
			return nil, err
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Created = created
	cfg.OS, cfg.Architecture = "linux", arch
	user := fmt.Sprintf("%d:%d", UID, UID)
	cfg.Config = v1.Config{
		Entrypoint: []string{"/meshproxy"},
		User:       user,
		Env:        []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		WorkingDir: "/",
		Labels:     o.labels(name, description),
	}
	return mutate.ConfigFile(img, cfg)
}

// labels are the org.opencontainers.image.* annotations, as labels.
func (o Options) labels(name, description string) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       name,
		"org.opencontainers.image.description": description,
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.revision":    o.Revision,
		"org.opencontainers.image.source":      o.Source,
		"org.opencontainers.image.created":     o.Created.UTC().Format(time.RFC3339),
	}
	for k, v := range l {
		if strings.TrimSpace(v) == "" {
			delete(l, k)
		}
	}
	return l
}

func addendum(img v1.Image, arch string) mutate.IndexAddendum {
	return mutate.IndexAddendum{
		Add: img,
		Descriptor: v1.Descriptor{
			MediaType: types.OCIManifestSchema1,
			Platform:  &v1.Platform{OS: "linux", Architecture: arch},
		},
	}
}
