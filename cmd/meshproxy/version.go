package main

import (
	"context"
	"flag"
	"fmt"
	"runtime/debug"

	"github.com/seed722d2a70/meshproxy/internal/release"
)

// version is release.Version, set at link time by the Makefile.
var version = release.Version

func runVersion(_ context.Context, env environment, args []string) error {
	fs := flag.NewFlagSet("meshproxy version", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	goVersion := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
	}
	_, err := fmt.Fprintf(env.stdout, "meshproxy %s (%s)\n", version, goVersion)
	return err
}
