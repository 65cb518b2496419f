// Command meshimage builds meshproxy's container images without a container
// daemon (package image) and pushes them; `make image` and `make push` run
// it.
//
//	meshimage build [-out bin/image] [-version V] ...   OCI layouts and archives
//	meshimage push -registry REGISTRY [-out bin/image]  the layouts, to a registry
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/seed722d2a70/meshproxy/image"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshimage:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: meshimage build|push [flags]")
	}
	switch args[0] {
	case "build":
		return runBuild(ctx, args[1:], stdout)
	case "push":
		return runPush(args[1:], stdout)
	}
	return fmt.Errorf("unknown command %q: want build or push", args[0])
}

func runBuild(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("meshimage build", flag.ContinueOnError)
	out := fs.String("out", "bin/image", "directory of the OCI layouts (NAME/) and archives (NAME.tar)")
	repo := fs.String("repository", image.DefaultRepository, "repository prefix of the image names in the layouts")
	version := fs.String("version", "dev", "version stamped into the binaries, the tag and the labels")
	source := fs.String("source", "https://github.com/seed722d2a70/meshproxy", "source label")
	platforms := fs.String("platforms", strings.Join(image.DefaultPlatforms, ","), "GOARCH values to build for")
	roots := fs.String("iptables-roots", "", "GOARCH=DIR,...: Debian trees holding iptables for each platform (scripts/image-deps.sh makes them)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	created, err := sourceDate()
	if err != nil {
		return err
	}
	o := image.Options{
		Module:        ".",
		Version:       *version,
		Revision:      gitOutput("rev-parse", "HEAD"),
		Source:        *source,
		Created:       created,
		Platforms:     strings.Split(*platforms, ","),
		IptablesRoots: map[string]string{},
	}
	for kv := range strings.SplitSeq(*roots, ",") {
		if kv == "" {
			continue
		}
		arch, dir, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("-iptables-roots: %q is not GOARCH=DIR", kv)
		}
		o.IptablesRoots[arch] = dir
	}
	imgs, err := image.Build(ctx, o)
	if err != nil {
		return err
	}
	for _, w := range imgs.Named(*repo, *version) {
		dir := filepath.Join(*out, w.Name)
		if err := image.WriteLayout(dir, w.Index, w.Ref); err != nil {
			return err
		}
		if err := image.WriteArchive(dir, dir+".tar", created); err != nil {
			return err
		}
		d, err := w.Index.Digest()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s@%s\n\tlayout %s, archive %s.tar\n", w.Ref, d, dir, dir)
	}
	return nil
}

func runPush(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("meshimage push", flag.ContinueOnError)
	out := fs.String("out", "bin/image", "directory `meshimage build` wrote")
	registry := fs.String("registry", "", "repository prefix to push to (registry.example.com/team)")
	repo := fs.String("repository", image.DefaultRepository, "repository prefix the layouts were built with")
	version := fs.String("version", "dev", "tag the layouts were built with, and pushed as")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *registry == "" {
		return errors.New("push: -registry is required")
	}
	for _, name := range []string{image.ProxyName, image.ControllerName} {
		idx, err := image.ReadLayout(filepath.Join(*out, name), image.Ref(*repo, name, *version))
		if err != nil {
			return err
		}
		ref := image.Ref(strings.TrimSuffix(*registry, "/"), name, *version)
		if err := image.Push(ref, idx); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "pushed", ref)
	}
	return nil
}

// sourceDate is SOURCE_DATE_EPOCH, else the time of the last commit.
func sourceDate() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		s = gitOutput("log", "-1", "--format=%ct")
	}
	if s == "" {
		return time.Time{}, errors.New("set SOURCE_DATE_EPOCH: there is no git commit to take the time from")
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
	}
	return time.Unix(sec, 0).UTC(), nil
}

func gitOutput(args ...string) string {
	out, err := exec.Command("git", args...).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
