package main

import (
	"context"
	"flag"
	"fmt"
	"runtime/debug"
)

// version is set at link time by the Makefile (-X main.version=...).
var version = "dev"

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
