// Command meshbench measures meshproxy against the limit (no proxy), a
// minimal Go TLS tunnel, stunnel and haproxy, and writes bench/results.md
// and bench/results.json. `make bench` runs it.
//
//	meshbench [run] [-quick] [-meshproxy bin/meshproxy] [-out bench]
//
// It re-runs itself for the processes it starts: `meshbench apps` serves the
// backend apps and `meshbench gotls` is one side of the go-tls contender.
// `meshbench render` writes results.md again from results.json.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/seed722d2a70/meshproxy/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "meshbench:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runBench(ctx, args, stdout, stderr)
	case "apps":
		return runApps(ctx, args, stderr)
	case "gotls":
		return runGoTLS(ctx, args, stderr)
	case "render":
		return runRender(args, stderr)
	}
	return fmt.Errorf("unknown command %q (want run, render, apps or gotls)", cmd)
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts := bench.DefaultOptions()
	fs := flag.NewFlagSet("meshbench run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "smoke run: tiny sizes, one repetition; the results say so")
	out := fs.String("out", "bench", "directory to write results.md and results.json to")
	meshproxy := fs.String("meshproxy", "bin/meshproxy", "meshproxy binary to measure")
	contenders := fs.String("contenders", strings.Join(bench.AllContenders(), ","), "contenders to run")
	measures := fs.String("measures", "", "comma-separated table names or prefixes to run, e.g. http,grpc (default: all)")
	repeat := fs.Int("repeat", opts.Repeat, "repetitions of every measure")
	bulkMiB := fs.Int64("bulk-mib", opts.BulkBytes>>20, "MiB per bulk run, split over its streams")
	idle := fs.Int("idle-conns", opts.IdleConns, "idle connections of the memory measure")
	fs.DurationVar(&opts.MaxTime, "max-time", opts.MaxTime, "bound on the whole run; measures left when it passes are skipped")
	keep := fs.Bool("keep", false, "keep the scratch directory (configurations, logs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *quick {
		opts.Quick()
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["repeat"] || !*quick {
		opts.Repeat = *repeat
	}
	if set["bulk-mib"] || !*quick {
		opts.BulkBytes = *bulkMiB << 20
	}
	if set["idle-conns"] || !*quick {
		opts.IdleConns = *idle
	}
	opts.Contenders = strings.Split(*contenders, ",")
	if *measures != "" {
		opts.Measures = strings.Split(*measures, ",")
	}
	var err error
	if opts.Meshproxy, err = filepath.Abs(*meshproxy); err != nil {
		return err
	}
	if opts.Self, err = os.Executable(); err != nil {
		return err
	}
	if opts.Dir, err = os.MkdirTemp("", "meshbench-"); err != nil {
		return err
	}
	if *keep {
		fmt.Fprintf(stderr, "meshbench: scratch directory %s\n", opts.Dir)
	} else {
		defer os.RemoveAll(opts.Dir)
	}
	opts.Progress = stderr

	report, err := bench.Run(ctx, opts)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(*out, "results.md"), report.WriteMarkdown); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(*out, "results.json"), report.WriteJSON); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "meshbench: wrote %s and %s in %s\n", filepath.Join(*out, "results.md"), filepath.Join(*out, "results.json"), report.Elapsed.Round(1e9))
	return nil
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// runRender writes results.md again from results.json, for when the
// rendering changes and a run is too long to repeat.
func runRender(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("meshbench render", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "bench", "directory holding results.json; results.md is written next to it")
	note := fs.String("note", "", "a note to add to both files, e.g. about the conditions of the run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := os.Open(filepath.Join(*dir, "results.json"))
	if err != nil {
		return err
	}
	defer f.Close()
	report, err := bench.ReadReport(f)
	if err != nil {
		return err
	}
	if *note != "" {
		report.Notes = append(report.Notes, *note)
		if err := writeFile(filepath.Join(*dir, "results.json"), report.WriteJSON); err != nil {
			return err
		}
	}
	return writeFile(filepath.Join(*dir, "results.md"), report.WriteMarkdown)
}

func runApps(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("meshbench apps", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var e bench.Endpoints
	fs.StringVar(&e.Sink, "sink", "127.0.0.1:0", "sink address")
	fs.StringVar(&e.Echo, "echo", "127.0.0.1:0", "echo address")
	fs.StringVar(&e.HTTP, "http", "127.0.0.1:0", "HTTP address")
	fs.StringVar(&e.GRPC, "grpc", "127.0.0.1:0", "gRPC address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return bench.ServeApps(ctx, e)
}

// routes is a repeatable -route flag.
type routes []bench.Tunnel

func (r *routes) String() string { return fmt.Sprint(*r) }

func (r *routes) Set(s string) error {
	t, err := bench.ParseRoute(s)
	if err != nil {
		return err
	}
	*r = append(*r, t)
	return nil
}

func runGoTLS(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("meshbench gotls", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts bench.GoTLSOptions
	fs.BoolVar(&opts.Client, "client", false, "accept plaintext and dial TLS (default: accept TLS and dial plaintext)")
	fs.StringVar(&opts.Cert, "cert", "", "PEM certificate chain")
	fs.StringVar(&opts.Key, "key", "", "PEM private key")
	fs.StringVar(&opts.Bundle, "bundle", "", "PEM CA bundle peers must chain to")
	var rs routes
	fs.Var(&rs, "route", "LISTEN=CONNECT (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts.Routes = rs
	return bench.RunGoTLS(ctx, opts)
}
