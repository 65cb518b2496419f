package image

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// iptablesCommands are the names `meshproxy init` runs (netinit's Family
// commands), each a link to xtables-nft-multi, which picks its mode from the
// name it was called by. The nft backend is the one shipped: see
// docs/images.md.
var iptablesCommands = []string{
	"iptables", "iptables-save", "iptables-restore",
	"ip6tables", "ip6tables-save", "ip6tables-restore",
}

const xtablesMulti = "/usr/sbin/xtables-nft-multi"

// triplets are Debian's multiarch directory names, by GOARCH.
var triplets = map[string]string{
	"amd64": "x86_64-linux-gnu",
	"arm64": "aarch64-linux-gnu",
}

// iptablesEntries returns Debian's nft-backend iptables, taken from root (a
// Debian system, or Debian packages unpacked with dpkg-deb -x) for goarch:
// xtables-nft-multi, the command links to it, its extensions, and the shared
// libraries and dynamic loader they need, found by reading their ELF
// headers (DT_NEEDED, PT_INTERP) rather than running ldd, so that a root of
// another architecture works too.
func iptablesEntries(root, goarch string) ([]entry, error) {
	triplet, ok := triplets[goarch]
	if !ok {
		return nil, fmt.Errorf("iptables: no Debian multiarch name for %s", goarch)
	}
	libDir := "/usr/lib/" + triplet
	var entries []entry
	seen := map[string]bool{}
	var elfs []entry // files whose libraries are still to find

	addFile := func(imagePath string) error {
		if seen[imagePath] {
			return nil
		}
		data, err := readRoot(root, imagePath)
		if err != nil {
			return err
		}
		seen[imagePath] = true
		e := entry{Path: imagePath, Mode: 0o755, Data: data}
		entries = append(entries, e)
		elfs = append(elfs, e)
		return nil
	}
	if err := addFile(xtablesMulti); err != nil {
		return nil, err
	}
	for _, name := range iptablesCommands {
		entries = append(entries, entry{Path: "/usr/sbin/" + name, Linkname: path.Base(xtablesMulti)})
	}
	// Extensions are loaded with dlopen, so no header names them: take the
	// whole directory (about 1 MiB).
	extDir := libDir + "/xtables"
	exts, err := os.ReadDir(filepath.Join(root, extDir))
	if err != nil {
		return nil, fmt.Errorf("iptables extensions: %w", err)
	}
	for _, e := range exts {
		if strings.HasSuffix(e.Name(), ".so") {
			if err := addFile(extDir + "/" + e.Name()); err != nil {
				return nil, err
			}
		}
	}

	for len(elfs) > 0 {
		e := elfs[0]
		elfs = elfs[1:]
		needed, interp, err := elfDeps(e.Data)
		if err != nil {
			return nil, fmt.Errorf("iptables: %s: %w", e.Path, err)
		}
		if interp != "" && !seen[interp] {
			// The loader's path is fixed in every binary (/lib64/... on
			// amd64, /lib/... on arm64); the file lives in libDir on a
			// merged-/usr Debian.
			seen[interp] = true
			real := libDir + "/" + path.Base(interp)
			if err := addFile(real); err != nil {
				return nil, err
			}
			// /lib is a link to usr/lib in the image, so a loader path
			// under /lib is made under /usr/lib.
			link := interp
			if strings.HasPrefix(link, "/lib/") {
				link = "/usr" + link
			}
			if link != real {
				entries = append(entries, entry{Path: link, Linkname: real})
			}
		}
		for _, lib := range needed {
			if err := addFile(libDir + "/" + lib); err != nil {
				return nil, err
			}
		}
	}
	// The packages' licences travel with their files.
	for _, pkg := range []string{"iptables", "libxtables12", "libnftnl11", "libmnl0", "libnetfilter-conntrack3", "libnfnetlink0", "libc6"} {
		p := "/usr/share/doc/" + pkg + "/copyright"
		if data, err := os.ReadFile(filepath.Join(root, p)); err == nil {
			entries = append(entries, entry{Path: p, Mode: 0o644, Data: data})
		}
	}
	// The loader searches /lib/<triplet> and /usr/lib/<triplet>; on a
	// merged-/usr Debian /lib is a link to usr/lib.
	entries = append(entries, entry{Path: "/lib", Linkname: "usr/lib"})
	sort.Slice(entries, func(i, j int) bool { return entries[i].Path < entries[j].Path })
	return entries, nil
}

// readRoot reads the file at imagePath in root. Debian 12's packages still
// ship some libraries (libc6's) under /lib, which a merged-/usr system
// reaches through its /lib link and an unpacked package holds as is, so
// /usr/lib/... is also looked for at /lib/....
func readRoot(root, imagePath string) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(root, imagePath))
	if errors.Is(err, os.ErrNotExist) && strings.HasPrefix(imagePath, "/usr/lib/") {
		data, err = os.ReadFile(filepath.Join(root, strings.TrimPrefix(imagePath, "/usr")))
	}
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	return data, nil
}

// elfDeps returns the shared libraries an ELF file needs and its
// interpreter ("" for a shared library).
func elfDeps(data []byte) (needed []string, interp string, err error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, "", err
	}
	needed, err = f.ImportedLibraries()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return nil, "", err
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return nil, "", err
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	return needed, interp, nil
}
