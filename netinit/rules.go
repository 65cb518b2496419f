package netinit

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/seed722d2a70/meshproxy/ports"
)

// maxMultiport is how many ports one multiport match takes; a range counts
// as two (xt_multiport's limit).
const maxMultiport = 15

// Script returns the iptables-restore input that installs c's rules for f
// into a nat table that does not hold them yet. It is pure: what
// `meshproxy init --dry-run` prints. [Apply] writes the same rules but
// leaves out the jumps that are already installed.
func Script(c Config, f Family) ([]byte, error) {
	return applyScript(c, f, savedState{})
}

// applyScript returns the restore input that makes the nat table hold
// exactly c's rules, given what iptables-save showed: our chains are
// declared (which creates them, or flushes them when they exist) and filled;
// a jump to them that is already in place is kept, any other reference from
// PREROUTING or OUTPUT (a duplicate, or a stale variant) is deleted.
func applyScript(c Config, f Family, st savedState) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if !f.valid() {
		return nil, fmt.Errorf("%w: unknown address family %v", ErrInvalidConfig, f)
	}
	var b strings.Builder
	b.WriteString(header(f, "transparent interception rules"))
	b.WriteString("*nat\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n", InboundChain)
	fmt.Fprintf(&b, ":%s - [0:0]\n", OutboundChain)

	keep := map[string]bool{}
	for _, r := range st.references() {
		if r.chain != "PREROUTING" && r.chain != "OUTPUT" {
			continue // not ours to manage; Remove deletes it
		}
		want := r.target == InboundChain && r.chain == "PREROUTING" || r.target == OutboundChain && r.chain == "OUTPUT"
		if want && r.text == (jump{r.chain, r.target}).rule() && !keep[r.text] {
			keep[r.text] = true
			continue
		}
		fmt.Fprintf(&b, "-D %s\n", r.text)
	}

	writeInbound(&b, c)
	writeOutbound(&b, c, f)
	for _, j := range jumps() {
		if !keep[j.rule()] {
			fmt.Fprintf(&b, "-A %s\n", j.rule())
		}
	}
	b.WriteString("COMMIT\n")
	return []byte(b.String()), nil
}

// writeInbound writes InboundChain: connections to the inbound port itself
// (mesh traffic addressed to 4143 needs no redirect), to the admin port and
// to the skip-inbound ports return; all other TCP goes to the inbound port.
func writeInbound(b *strings.Builder, c Config) {
	// A fresh set: ports.Set values share their storage, and c's must not
	// change.
	var direct ports.Set
	for _, r := range c.SkipInboundPorts.Ranges() {
		for p := int(r[0]); p <= int(r[1]); p++ {
			direct.Add(uint16(p))
		}
	}
	direct.Add(c.InboundPort)
	direct.Add(c.AdminPort)
	writePortReturns(b, InboundChain, direct)
	fmt.Fprintf(b, "-A %s -p tcp -j REDIRECT --to-ports %d\n", InboundChain, c.InboundPort)
}

// writeOutbound writes OutboundChain: the proxy's own connections, loopback,
// the skipped ports and networks return; all other TCP goes to the outbound
// port. The UID rule comes first: it is what keeps the proxy from
// redirecting its own connections to itself.
func writeOutbound(b *strings.Builder, c Config, f Family) {
	fmt.Fprintf(b, "-A %s -m owner --uid-owner %d -j RETURN\n", OutboundChain, c.ProxyUID)
	// Everything routed through lo: 127.0.0.0/8 or ::1, and the pod's own
	// addresses. The inbound proxy's connections to the application are
	// covered by the UID rule as well.
	fmt.Fprintf(b, "-A %s -o lo -j RETURN\n", OutboundChain)
	writePortReturns(b, OutboundChain, c.SkipOutboundPorts)
	for _, p := range c.SkipOutboundCIDRs {
		if p.Addr().Is4() != (f == IPv4) {
			continue
		}
		fmt.Fprintf(b, "-A %s -d %s -j RETURN\n", OutboundChain, p)
	}
	fmt.Fprintf(b, "-A %s -p tcp -j REDIRECT --to-ports %d\n", OutboundChain, c.OutboundPort)
}

// writePortReturns writes RETURN rules for the destination ports in set: a
// single port or range as a plain tcp match, more as multiport matches of at
// most maxMultiport ports each.
func writePortReturns(b *strings.Builder, chain string, set ports.Set) {
	ranges := set.Ranges()
	if len(ranges) == 1 {
		fmt.Fprintf(b, "-A %s -p tcp -m tcp --dport %s -j RETURN\n", chain, rangeString(ranges[0]))
		return
	}
	for len(ranges) > 0 {
		var items []string
		used := 0
		for len(ranges) > 0 {
			cost := 1
			if ranges[0][0] != ranges[0][1] {
				cost = 2
			}
			if used+cost > maxMultiport {
				break
			}
			used += cost
			items = append(items, rangeString(ranges[0]))
			ranges = ranges[1:]
		}
		fmt.Fprintf(b, "-A %s -p tcp -m multiport --dports %s -j RETURN\n", chain, strings.Join(items, ","))
	}
}

// rangeString formats an inclusive port range as iptables takes it: "80" or
// "4000:4100".
func rangeString(r [2]uint16) string {
	if r[0] == r[1] {
		return strconv.Itoa(int(r[0]))
	}
	return strconv.Itoa(int(r[0])) + ":" + strconv.Itoa(int(r[1]))
}

// removeScript returns the restore input that deletes everything of
// meshproxy's that st shows: every rule referring to our chains, then the
// chains themselves (flushed first, so that -X finds them empty). It returns
// nil when there is nothing to delete: iptables-restore fails on -D of a rule
// that does not exist, so an idempotent Remove must not run at all then.
func removeScript(f Family, st savedState) []byte {
	if st.empty() {
		return nil
	}
	var b strings.Builder
	b.WriteString(header(f, "removal of the interception rules"))
	b.WriteString("*nat\n")
	for _, r := range st.references() {
		fmt.Fprintf(&b, "-D %s\n", r.text)
	}
	for _, c := range st.chains {
		fmt.Fprintf(&b, "-F %s\n", c)
	}
	for _, c := range st.chains {
		fmt.Fprintf(&b, "-X %s\n", c)
	}
	b.WriteString("COMMIT\n")
	return []byte(b.String())
}
