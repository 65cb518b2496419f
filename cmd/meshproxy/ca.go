package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/seed722d2a70/meshproxy/identity"
)

// runCA manages the embedded dev CA: `ca init` creates one, `ca issue`
// writes an SVID from it to files, for demos and tests.
func runCA(ctx context.Context, env environment, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: meshproxy ca init|issue [flags]")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(env.stderr, "usage: meshproxy ca init|issue [flags]\n\nRun 'meshproxy ca init -help' or 'meshproxy ca issue -help' for their flags.")
		return flag.ErrHelp
	case "init":
		return runCAInit(env, args[1:])
	case "issue":
		return runCAIssue(env, args[1:])
	}
	return fmt.Errorf("unknown ca command %q (want init or issue)", args[0])
}

func runCAInit(env environment, args []string) error {
	fs := flag.NewFlagSet("meshproxy ca init", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	dir := fs.String("dir", defaultCADir(), "directory to write the CA certificate and key (0600) to")
	tdName := fs.String("trust-domain", "mesh.local", "trust domain of the CA")
	force := fs.Bool("force", false, "replace an existing CA")
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("-dir is required: there is no user config directory")
	}
	td, err := spiffeid.TrustDomainFromString(*tdName)
	if err != nil {
		return fmt.Errorf("trust domain: %w", err)
	}
	if existing, err := identity.LoadCADir(*dir); err == nil && !*force {
		if existing.TrustDomain() != td {
			return fmt.Errorf("%s already holds a CA for %q; use -force to replace it", *dir, existing.TrustDomain().Name())
		}
		fmt.Fprintf(env.stdout, "dev CA for %s already in %s\n", td.Name(), *dir)
		return nil
	}
	ca, err := identity.NewCA(td)
	if err != nil {
		return err
	}
	if *force {
		// WriteFiles never replaces a CA; -force is the user asking to.
		for _, f := range []string{identity.CACertFileName, identity.CAKeyFileName} {
			if err := os.Remove(filepath.Join(*dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	if err := ca.WriteFiles(*dir); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "dev CA for %s written to %s\n", td.Name(), *dir)
	return nil
}

func runCAIssue(env environment, args []string) error {
	fs := flag.NewFlagSet("meshproxy ca issue", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	dir := fs.String("dir", defaultCADir(), "directory of the CA")
	id := fs.String("id", "", "SPIFFE ID to issue, e.g. spiffe://mesh.local/web (required)")
	out := fs.String("out-dir", ".", "directory to write svid.pem, svid_key.pem (0600) and svid_bundle.pem to")
	ttl := fs.Duration("ttl", time.Hour, "lifetime of the SVID")
	if err := parseFlagsOnly(fs, args); err != nil {
		return err
	}
	sid, err := spiffeid.FromString(*id)
	if err != nil {
		return fmt.Errorf("-id: %w", err)
	}
	ca, err := identity.LoadCADir(*dir)
	if err != nil {
		return err
	}
	svid, err := ca.Issue(sid, *ttl)
	if err != nil {
		return err
	}
	if err := identity.WriteSVIDFiles(*out, svid, ca.Bundle()); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "SVID for %s written to %s (expires %s)\n", sid, *out, svid.Certificates[0].NotAfter.Format(time.RFC3339))
	return nil
}

// defaultCADir is the flag default for -dir; empty when the user has no
// config directory, in which case -dir is required.
func defaultCADir() string {
	dir, err := identity.DefaultCADir()
	if err != nil {
		return ""
	}
	return dir
}
