package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/seed722d2a70/meshproxy/netinit"
	"github.com/seed722d2a70/meshproxy/ports"
)

// runInit installs (or, with -remove, deletes) the nat rules that send the
// pod's TCP traffic through the proxy. Every flag can also be set with
// MESHPROXY_<FLAG> (upper case, dashes as underscores); flags win.
func runInit(ctx context.Context, env environment, args []string) error {
	fs := flag.NewFlagSet("meshproxy init", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	cfg := netinit.DefaultConfig()
	uid := fs.String("proxy-uid", fmt.Sprint(netinit.DefaultProxyUID), "UID or user name the proxy runs as; its connections are not redirected")
	fs.Var((*portFlag)(&cfg.InboundPort), "inbound-port", "port of the inbound proxy: every TCP connection into the pod is redirected to it")
	fs.Var((*portFlag)(&cfg.OutboundPort), "outbound-port", "port of the outbound proxy: every TCP connection the pod makes is redirected to it")
	fs.Var((*portFlag)(&cfg.AdminPort), "admin-port", "port of the proxy's admin server, never redirected")
	fs.TextVar(&cfg.SkipInboundPorts, "skip-inbound-ports", ports.Set{}, "ports and ranges (22,4000-4100) that reach the application directly")
	fs.TextVar(&cfg.SkipOutboundPorts, "skip-outbound-ports", ports.Set{}, "destination ports and ranges the pod reaches directly")
	cidrs := fs.String("skip-outbound-cidrs", "", "destination networks (10.0.0.0/8,fd00::/8) the pod reaches directly")
	// IPv6 rules by default where both the tool and the kernel's IPv6 are
	// there: on a node booted without IPv6, ip6tables-restore would fail
	// after the IPv4 rules were written, and the pod would never start.
	_, lookErr := exec.LookPath(netinit.IPv6.RestoreCommand())
	_, v6Err := os.Stat("/proc/net/if_inet6")
	ipv6 := fs.Bool("ipv6", lookErr == nil && v6Err == nil,
		"also write IPv6 rules with ip6tables-restore (on by default where it is installed and the kernel has IPv6)")
	dryRun := fs.Bool("dry-run", false, "print the iptables-restore input instead of applying it")
	remove := fs.Bool("remove", false, "delete meshproxy's chains and the jumps to them; other rules stay")
	if err := setFromEnv(fs, env.getenv); err != nil {
		return err
	}
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	var err error
	if cfg.ProxyUID, err = netinit.ParseUID(*uid); err != nil {
		return fmt.Errorf("-proxy-uid: %w", err)
	}
	if cfg.SkipOutboundCIDRs, err = netinit.ParseCIDRs(*cidrs); err != nil {
		return fmt.Errorf("-skip-outbound-cidrs: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	families := []netinit.Family{netinit.IPv4}
	if *ipv6 {
		families = append(families, netinit.IPv6)
	}

	if *dryRun {
		if *remove {
			return errors.New("-dry-run prints the rules to install; it cannot be combined with -remove")
		}
		for _, f := range families {
			script, err := netinit.Script(cfg, f)
			if err != nil {
				return err
			}
			if _, err := env.stdout.Write(script); err != nil {
				return err
			}
		}
		return nil
	}

	// Find every command before changing anything, so that a missing one
	// leaves both families untouched.
	for _, f := range families {
		for _, name := range []string{f.SaveCommand(), f.RestoreCommand()} {
			if _, err := exec.LookPath(name); err != nil {
				return fmt.Errorf("%w (install iptables, or pass -ipv6=false to skip IPv6)", err)
			}
		}
	}
	for i, f := range families {
		if *remove {
			err = netinit.Remove(ctx, f)
		} else {
			err = netinit.Apply(ctx, cfg, f)
		}
		if err != nil {
			if i > 0 {
				return fmt.Errorf("%v rules done, %v failed (running init again is safe): %w", families[:i], f, err)
			}
			return err
		}
	}
	verb := "installed"
	if *remove {
		verb = "removed"
	}
	fmt.Fprintf(env.stdout, "meshproxy init: %s %v interception rules (chains %s, %s)\n", verb, families, netinit.InboundChain, netinit.OutboundChain)
	return nil
}

// setFromEnv sets every flag of fs that has a MESHPROXY_<FLAG> variable, so
// that flags parsed afterwards take precedence.
func setFromEnv(fs *flag.FlagSet, getenv func(string) string) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name := "MESHPROXY_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v := getenv(name)
		if v == "" || err != nil {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("%s: %w", name, e)
		}
	})
	return err
}

// portFlag is a flag holding one TCP port, 1..65535.
type portFlag uint16

func (p *portFlag) String() string { return fmt.Sprint(uint16(*p)) }

func (p *portFlag) Set(s string) error {
	n, err := netinit.ParsePort(s)
	if err != nil {
		return err
	}
	*p = portFlag(n)
	return nil
}
