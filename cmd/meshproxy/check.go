//go:build !sidecar

package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/seed722d2a70/meshproxy/check"
	"github.com/seed722d2a70/meshproxy/install"
)

// runCheck checks the installation and the meshed workloads of the cluster
// in the kubeconfig.
func runCheck(ctx context.Context, env environment, args []string) error {
	fs := flag.NewFlagSet("meshproxy check", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintln(env.stderr, "usage: meshproxy check [flags]\n\n"+
			"Checks the cluster's meshproxy control plane, SPIRE, the injected pods and their Services\n"+
			"and NetworkPolicies; exits 1 when a check fails.\n\nflags:")
		fs.PrintDefaults()
	}
	kubeconfig := fs.String("kubeconfig", env.getenv("KUBECONFIG"), "kubeconfig file; empty: in-cluster")
	namespace := fs.String("namespace", install.DefaultOptions().Namespace, "namespace of the control plane")
	output := fs.String("output", "text", "text or json")
	proxyImage := fs.String("proxy-image", "", "the proxy image injected pods should run (default: the installation's)")
	timeout := fs.Duration("timeout", time.Minute, "time limit of all checks")
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return fmt.Errorf("-output %q: want text or json", *output)
	}
	client, err := kubeClient(*kubeconfig, "meshproxy-check")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	results := check.Run(ctx, check.Options{Client: client, Namespace: *namespace, ProxyImage: *proxyImage})
	if *output == "json" {
		err = check.WriteJSON(env.stdout, results)
	} else {
		err = check.WriteText(env.stdout, results)
	}
	if err != nil {
		return err
	}
	if check.Failed(results) {
		return fmt.Errorf("%w: a check failed", errProblemsFound)
	}
	return nil
}
