//go:build !sidecar

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/seed722d2a70/meshproxy/netpol"
	"github.com/seed722d2a70/meshproxy/ports"
)

// runNetpol checks NetworkPolicies against the workloads they select.
func runNetpol(_ context.Context, env environment, args []string) error {
	fs := flag.NewFlagSet("meshproxy netpol", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintln(env.stderr, "usage: meshproxy netpol [flags] file ...|-\n\n"+
			"Reports NetworkPolicy rules that admit a port of a meshed pod but not the inbound proxy\n"+
			"port, where meshed connections arrive: ingress rules of meshed pods, and egress rules of\n"+
			"meshed clients toward them. With -destination-controller, only opaque ports count (the\n"+
			"pods' and their Services' opaque-ports annotations, or the default list): HTTP and the\n"+
			"rest keep their port. Without it, every port does. Exits 1 when any is left unfixed.\n"+
			"With -fix, files are rewritten in place (stdin is written to stdout).\n\nflags:")
		fs.PrintDefaults()
	}
	d := netpol.DefaultOptions()
	fix := fs.Bool("fix", false, "add the inbound port to the rules found")
	allowAdmin := fs.Bool("allow-admin", false, "with -fix, add the admin port too (for scraping from other pods)")
	meshedByDefault := fs.Bool("meshed-by-default", false, "count every pod not annotated disabled as meshed (manifests not yet injected)")
	inPort := fs.Uint("inbound-port", uint(d.InboundPort), "proxy inbound port")
	adminPort := fs.Uint("admin-port", uint(d.AdminPort), "proxy admin port")
	namespace := fs.String("namespace", d.Namespace, "namespace of objects that name none")
	controller := fs.Bool("destination-controller", false, "the proxies resolve destinations with a destination controller (inject -destination-addr): only opaque ports go to the inbound port")
	opaque := fs.String("opaque-ports", d.DefaultOpaque.String(), "with -destination-controller, the ports opaque where no annotation says otherwise")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("no input: name files, or - for stdin")
	}
	o := d
	if *inPort == 0 || *inPort > 65535 || *adminPort == 0 || *adminPort > 65535 {
		return fmt.Errorf("-inbound-port and -admin-port must be ports")
	}
	o.InboundPort, o.AdminPort = uint16(*inPort), uint16(*adminPort)
	o.Fix, o.AllowAdmin, o.MeshedByDefault, o.Namespace = *fix, *allowAdmin, *meshedByDefault, *namespace
	o.Controller = *controller
	defaults, err := ports.Parse(*opaque)
	if err != nil {
		return fmt.Errorf("-opaque-ports: %w", err)
	}
	o.DefaultOpaque = defaults

	raw, err := readInputs(fs.Args(), os.Stdin)
	if err != nil {
		return err
	}
	inputs := make([]netpol.Input, len(raw))
	for i, r := range raw {
		inputs[i] = netpol.Input{Name: r.name, Data: r.data}
	}
	rep, err := netpol.Check(inputs, o)
	if err != nil {
		return err
	}
	for _, p := range rep.Problems {
		fmt.Fprintln(env.stderr, p.String())
	}
	if o.Fix {
		for i, in := range raw {
			if in.name == "<stdin>" {
				if _, err := env.stdout.Write(rep.Outputs[i]); err != nil {
					return err
				}
				continue
			}
			if string(rep.Outputs[i]) == string(in.data) {
				continue
			}
			if err := writeFileKeepMode(in.name, rep.Outputs[i]); err != nil {
				return err
			}
		}
	}
	if rep.Unfixed() {
		return fmt.Errorf("%w: %d NetworkPolicy rule(s) would drop meshed traffic (run with -fix)", errProblemsFound, len(rep.Problems))
	}
	return nil
}

// writeFileKeepMode replaces a file's contents, keeping its mode.
func writeFileKeepMode(name string, data []byte) error {
	st, err := os.Stat(name)
	if err != nil {
		return err
	}
	return os.WriteFile(name, data, st.Mode().Perm())
}
