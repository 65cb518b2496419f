package netinit_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/seed722d2a70/meshproxy/netinit"
	"github.com/seed722d2a70/meshproxy/ports"
	"github.com/seed722d2a70/meshproxy/test/netns"
)

// natTable returns the namespace's nat table as iptables-save prints it,
// without the comment lines (they carry a timestamp) and packet counters.
func natTable(t *testing.T, ns *netns.NS, f netinit.Family) string {
	t.Helper()
	out := ns.MustRun(t, f.SaveCommand(), "-t", "nat")
	var lines []string
	for line := range strings.SplitSeq(out, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		lines = append(lines, regexp.MustCompile(`\[\d+:\d+\]`).ReplaceAllString(line, "[0:0]"))
	}
	return strings.Join(lines, "\n")
}

// Apply and Remove against real iptables in a fresh network namespace: the
// rules appear in our chains, applying twice changes nothing, applying a new
// configuration replaces the old one, other rules survive, and Remove leaves
// the table as it was before.
func TestApplyIdempotentAndRemove(t *testing.T) {
	for _, f := range []netinit.Family{netinit.IPv4, netinit.IPv6} {
		t.Run(f.String(), func(t *testing.T) {
			t.Parallel()
			netns.Require(t, f.RestoreCommand(), f.SaveCommand())
			ns := netns.New(t, "mpinit")
			ctx := context.Background()
			// Somebody else's rules, which must survive.
			ns.MustRun(t, f.Command(), "-t", "nat", "-A", "OUTPUT", "-p", "udp", "--dport", "53", "-j", "RETURN")
			ns.MustRun(t, f.Command(), "-t", "nat", "-N", "OTHER")
			ns.MustRun(t, f.Command(), "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "22", "-j", "OTHER")
			before := natTable(t, ns, f)

			cfg := netinit.DefaultConfig()
			cfg.SkipInboundPorts = ports.MustParse("22,8000-8100")
			cfg.SkipOutboundPorts = ports.MustParse("443")
			cidrs, _ := netinit.ParseCIDRs("10.96.0.0/12,fd00::/8")
			cfg.SkipOutboundCIDRs = cidrs
			apply := func(c netinit.Config) {
				t.Helper()
				if err := ns.Do(func() error { return netinit.Apply(ctx, c, f) }); err != nil {
					t.Fatal(err)
				}
			}
			apply(cfg)
			once := natTable(t, ns, f)
			for _, want := range []string{
				"-A PREROUTING -p tcp -j MESHPROXY_INBOUND",
				"-A OUTPUT -p tcp -j MESHPROXY_OUTBOUND",
				"-A MESHPROXY_INBOUND -p tcp -m multiport --dports 22,4143,4191,8000:8100 -j RETURN",
				"-A MESHPROXY_INBOUND -p tcp -j REDIRECT --to-ports 4143",
				"-A MESHPROXY_OUTBOUND -m owner --uid-owner 2102 -j RETURN",
				"-A MESHPROXY_OUTBOUND -o lo -j RETURN",
				"-A MESHPROXY_OUTBOUND -p tcp -m tcp --dport 443 -j RETURN",
				"-A MESHPROXY_OUTBOUND -p tcp -j REDIRECT --to-ports 4140",
				"-A OUTPUT -p udp -m udp --dport 53 -j RETURN",
			} {
				if !strings.Contains(once, want+"\n") && !strings.HasSuffix(once, want) {
					t.Errorf("after Apply, no %q in\n%s", want, once)
				}
			}
			cidr := "-d 10.96.0.0/12"
			if f == netinit.IPv6 {
				cidr = "-d fd00::/8"
			}
			if !strings.Contains(once, cidr+" -j RETURN") {
				t.Errorf("after Apply, no skipped CIDR %q in\n%s", cidr, once)
			}

			apply(cfg)
			if twice := natTable(t, ns, f); twice != once {
				t.Errorf("applying twice changed the table:\n--- once\n%s\n--- twice\n%s", once, twice)
			}

			// A new configuration replaces the old rules, not adds to them.
			other := netinit.DefaultConfig()
			other.OutboundPort = 15001
			apply(other)
			replaced := natTable(t, ns, f)
			if strings.Contains(replaced, "--to-ports 4140") || strings.Contains(replaced, "8000:8100") ||
				!strings.Contains(replaced, "--to-ports 15001") || strings.Count(replaced, "-j MESHPROXY_OUTBOUND") != 1 {
				t.Errorf("after applying a new configuration:\n%s", replaced)
			}

			for range 2 { // removing twice is fine too
				if err := ns.Do(func() error { return netinit.Remove(ctx, f) }); err != nil {
					t.Fatal(err)
				}
				if after := natTable(t, ns, f); after != before {
					t.Errorf("after Remove the table is not as before:\n--- before\n%s\n--- after\n%s", before, after)
				}
			}

			// An invalid configuration is refused before any command runs.
			bad := netinit.DefaultConfig()
			bad.ProxyUID = 0
			if err := ns.Do(func() error { return netinit.Apply(ctx, bad, f) }); !errors.Is(err, netinit.ErrInvalidConfig) {
				t.Errorf("Apply(uid 0) = %v, want ErrInvalidConfig", err)
			}
			if after := natTable(t, ns, f); after != before {
				t.Errorf("a refused Apply changed the table:\n%s", after)
			}
		})
	}
}
