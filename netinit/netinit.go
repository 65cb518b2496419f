// Package netinit installs the firewall rules that make meshproxy a
// transparent sidecar: every TCP connection into the pod is redirected to the
// inbound proxy, every TCP connection the pod makes to the outbound proxy,
// without the application knowing. It is what `meshproxy init` runs, once,
// before the proxy and the application start, in the pod's network namespace.
//
// The rules live in the nat table, in two chains of meshproxy's own so they
// can be listed, replaced and removed without touching anybody else's:
//
//   - [InboundChain], jumped to from PREROUTING for TCP: connections to the
//     inbound port itself, the admin port and the skip-inbound ports return;
//     every other TCP connection is redirected to the inbound port (4143).
//   - [OutboundChain], jumped to from OUTPUT for TCP: the proxy's own
//     connections (matched by its UID), connections leaving through the
//     loopback interface (127.0.0.0/8, ::1 and the pod's own addresses), the
//     skip-outbound ports and the skipped CIDRs return; every other TCP
//     connection is redirected to the outbound port (4140).
//
// Redirected connections keep their original destination in the kernel's
// connection tracking, where the proxy reads it back with SO_ORIGINAL_DST
// (package internal/origdst). For IPv6 the kernel redirects locally
// generated connections to [::1], so an outbound proxy that serves IPv6 must
// listen there as well as on 127.0.0.1.
//
// Rules are written with iptables-restore --noflush (ip6tables-restore for
// IPv6) in a single transaction per address family: either all of them take
// effect or none. Declaring a chain in restore input flushes it, so running
// [Apply] again replaces the chains' contents; the jumps from PREROUTING and
// OUTPUT are added only when iptables-save does not already show them, so
// they are never duplicated. [Remove] deletes the jumps and the chains and
// leaves every other rule as it was.
//
// [Script] builds the restore input from a [Config] without touching the
// system; it is what `meshproxy init --dry-run` prints.
package netinit

import "fmt"

// Names of the chains meshproxy owns in the nat table. They are fixed, not
// configurable, so that [Remove] finds them whatever flags [Apply] was given.
const (
	InboundChain  = "MESHPROXY_INBOUND"
	OutboundChain = "MESHPROXY_OUTBOUND"
)

// Family is an IP address family; IPv4 and IPv6 have separate tables and
// separate commands (iptables-*, ip6tables-*).
type Family int

// The address families netinit writes rules for.
const (
	IPv4 Family = iota
	IPv6
)

// String returns "IPv4" or "IPv6".
func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return fmt.Sprintf("Family(%d)", int(f))
}

// RestoreCommand is the command that writes f's tables: iptables-restore or
// ip6tables-restore.
func (f Family) RestoreCommand() string { return f.prefix() + "-restore" }

// SaveCommand is the command that lists f's tables: iptables-save or
// ip6tables-save.
func (f Family) SaveCommand() string { return f.prefix() + "-save" }

func (f Family) prefix() string {
	if f == IPv6 {
		return "ip6tables"
	}
	return "iptables"
}

func (f Family) valid() bool { return f == IPv4 || f == IPv6 }

// jump is a rule in a built-in chain that sends TCP to one of our chains.
type jump struct {
	from, to string
}

// rule returns the jump as it appears in restore input after "-A ", in the
// form iptables-save prints it, so that a saved rule can be recognized.
func (j jump) rule() string { return j.from + " -p tcp -j " + j.to }

// jumps returns the entry points into meshproxy's chains, in the order Apply
// adds them.
func jumps() [2]jump {
	return [2]jump{
		{from: "PREROUTING", to: InboundChain},
		{from: "OUTPUT", to: OutboundChain},
	}
}

// ours reports whether chain is one of meshproxy's chains.
func ours(chain string) bool { return chain == InboundChain || chain == OutboundChain }

// header is the comment that opens every script, so that a script found in
// a log or a dry run says where it came from and how it is meant to be used.
func header(f Family, what string) string {
	return fmt.Sprintf("# meshproxy init: %s (%s), input for %s --noflush\n", what, f, f.RestoreCommand())
}

// Command is the command that edits f's tables rule by rule: iptables or
// ip6tables.
func (f Family) Command() string { return f.prefix() }
