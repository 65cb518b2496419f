package image

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// refNameAnnotation names an image in an OCI layout's index.json; podman
// and skopeo take it after the path (oci-archive:FILE:NAME).
const refNameAnnotation = "org.opencontainers.image.ref.name"

// WriteLayout writes idx to a new OCI layout at dir (replacing one there),
// named tag in index.json.
func WriteLayout(dir string, idx v1.ImageIndex, tag string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{refNameAnnotation: tag})); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	return nil
}

// ReadLayout returns the index named tag in the OCI layout at dir.
func ReadLayout(dir, tag string) (v1.ImageIndex, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	m, err := top.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	for _, d := range m.Manifests {
		if d.Annotations[refNameAnnotation] == tag {
			return top.ImageIndex(d.Digest)
		}
	}
	return nil, fmt.Errorf("image: no index named %q in %s", tag, dir)
}

// WriteArchive writes the OCI layout at dir as an OCI archive (a tar of the
// layout, as `podman load` and oci-archive: read) to file. Entries are in
// path order with mtime, so the archive is as reproducible as the layout.
func WriteArchive(dir, file string, mtime time.Time) error {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, p := range paths {
		if err := addToArchive(tw, dir, p, mtime); err != nil {
			return fmt.Errorf("image: archive %s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

func addToArchive(tw *tar.Writer, dir, p string, mtime time.Time) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(dir, p)
	if err != nil {
		return err
	}
	h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: mtime, Mode: 0o644, Format: tar.FormatPAX}
	if fi.IsDir() {
		h.Typeflag, h.Name, h.Mode = tar.TypeDir, h.Name+"/", 0o755
		return tw.WriteHeader(h)
	}
	h.Typeflag, h.Size = tar.TypeReg, fi.Size()
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	src, err := os.Open(p)
	if err != nil {
		return err
	}
	defer src.Close()
	_, err = io.Copy(tw, src)
	return err
}

// Push writes idx to the registry as ref (repository:tag), with the
// credentials of the default keychain (docker login, podman login, or the
// helpers they name).
func Push(ref string, idx v1.ImageIndex) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	if err := remote.WriteIndex(r, idx, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return fmt.Errorf("image: push %s: %w", ref, err)
	}
	return nil
}

// Named is an image index with its name and reference.
type Named struct {
	Name  string // ProxyName or ControllerName
	Ref   string // repository/name:tag
	Index v1.ImageIndex
}

// Named returns both images with their references under repository, tagged
// tag.
func (imgs *Images) Named(repository, tag string) []Named {
	return []Named{
		{ProxyName, Ref(repository, ProxyName, tag), imgs.Proxy},
		{ControllerName, Ref(repository, ControllerName, tag), imgs.Controller},
	}
}

// Ref is repository/name:tag.
func Ref(repository, name, tag string) string {
	return repository + "/" + name + ":" + tag
}
