// Command meshproxy is a sidecar proxy for a service mesh: it gives its
// workload a SPIFFE identity, wraps the workload's TCP traffic in mutual TLS,
// and detects HTTP to add request-level metrics.
//
// This file and its siblings only parse flags and wire packages together;
// the proxy itself lives in the packages they import.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// SIGHUP would end the process at once, without draining. The proxy
	// reloads its config file when the file changes, so there is nothing
	// for a SIGHUP to ask; a closed terminal must not cut connections.
	signal.Ignore(syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "meshproxy:", err)
		}
		os.Exit(exitCode(err))
	}
}

// command is one subcommand of meshproxy.
type command struct {
	name  string
	usage string
	run   func(ctx context.Context, env environment, args []string) error
}

// environment is what a subcommand may touch of the process; tests supply
// their own.
type environment struct {
	getenv func(string) string
	stdout io.Writer
	stderr io.Writer
}

func commands() []command {
	return append([]command{
		{"run", "run the proxy", runProxy},
		{"ca", "manage the embedded dev CA: init, issue", runCA},
		{"init", "install the iptables rules that send the pod's TCP through the proxy", runInit},
		{"version", "print the version", runVersion},
	}, kubeCommands()...)
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	env := environment{getenv: getenv, stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return errors.New("no command given")
		}
		return flag.ErrHelp
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, env, args[1:])
		}
	}
	usage(stderr)
	return fmt.Errorf("unknown command %q", args[0])
}

// errProblemsFound makes the process exit 1 rather than 2: the command ran,
// and found something to report (as diff and grep do), for CI pipelines.
var errProblemsFound = errors.New("problems found")

// exitCode is the process exit status for a command's error.
func exitCode(err error) int {
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0 // help was asked for, and given
	case errors.Is(err, errProblemsFound):
		return 1
	}
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: meshproxy <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.usage)
	}
	fmt.Fprintln(w, "\nRun 'meshproxy <command> -help' for a command's flags.")
}

// parseFlagsOnly parses args for a command that takes flags and no
// arguments: a stray word (a directory meant for -dir, say) is an error,
// not silently ignored.
func parseFlagsOnly(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return nil
}
