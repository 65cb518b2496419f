package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/seed722d2a70/meshproxy/netinit"
)

func runInitArgs(env map[string]string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), append([]string{"init"}, args...),
		func(k string) string { return env[k] }, &stdout, &stderr)
	return stdout.String(), err
}

// A dry run prints the restore input for the flags given, environment
// variables fill in what flags do not say, and flags win over them.
func TestInitDryRun(t *testing.T) {
	out, err := runInitArgs(map[string]string{
		"MESHPROXY_SKIP_OUTBOUND_PORTS": "25",
		"MESHPROXY_PROXY_UID":           "1000",
	}, "-dry-run", "-ipv6=false", "--proxy-uid", "4242", "--skip-inbound-ports", "22,9000-9010",
		"--skip-outbound-cidrs", "10.96.0.0/12,fd00::/8", "--inbound-port", "15006")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"input for iptables-restore --noflush",
		"--uid-owner 4242 -j RETURN",
		"--dports 22,4191,9000:9010,15006 -j RETURN",
		"-A MESHPROXY_INBOUND -p tcp -j REDIRECT --to-ports 15006",
		"-A MESHPROXY_OUTBOUND -p tcp -m tcp --dport 25 -j RETURN",
		"-d 10.96.0.0/12 -j RETURN",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "ip6tables") || strings.Contains(out, "fd00::/8") {
		t.Errorf("-ipv6=false still printed IPv6 rules:\n%s", out)
	}

	out, err = runInitArgs(nil, "-dry-run", "-ipv6=true")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, "COMMIT") != 2 || !strings.Contains(out, "ip6tables-restore") {
		t.Errorf("-ipv6 dry run should print both families:\n%s", out)
	}
}

// Bad flags are refused with an error naming the problem; nothing runs
// (the commands would fail anyway without root, and dry runs print nothing).
func TestInitBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"port 0", nil, []string{"--inbound-port", "0"}, `"0" is not a port`},
		{"port too big", nil, []string{"--outbound-port", "65536"}, `"65536" is not a port`},
		{"skip port 0", nil, []string{"--skip-inbound-ports", "0"}, "not a port"},
		{"skip port too big", nil, []string{"--skip-outbound-ports", "80,70000"}, "not a port"},
		{"inverted range", nil, []string{"--skip-outbound-ports", "9000-8000"}, "inverted range"},
		{"unknown user", nil, []string{"--proxy-uid", "no-such-user-meshproxy"}, "no-such-user-meshproxy"},
		{"uid 0", nil, []string{"--proxy-uid", "0"}, "UID 0"},
		{"bad CIDR", nil, []string{"--skip-outbound-cidrs", "10.0.0.0/40"}, "not a CIDR"},
		{"same ports", nil, []string{"--inbound-port", "4140"}, "must differ"},
		{"bad env", map[string]string{"MESHPROXY_ADMIN_PORT": "x"}, nil, "MESHPROXY_ADMIN_PORT"},
		{"dry run and remove", nil, []string{"--remove"}, "cannot be combined"},
		{"extra argument", nil, []string{"now"}, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runInitArgs(tc.env, append([]string{"--dry-run"}, tc.args...)...)
			if err == nil || errors.Is(err, flag.ErrHelp) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
			if out != "" {
				t.Errorf("printed rules despite the error:\n%s", out)
			}
		})
	}
	if _, err := runInitArgs(nil, "--proxy-uid", "0"); !errors.Is(err, netinit.ErrInvalidConfig) {
		t.Errorf("without -dry-run: %v, want ErrInvalidConfig before touching iptables", err)
	}
}
