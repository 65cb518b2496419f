package netinit

import (
	"errors"
	"fmt"
	"net/netip"
	"os/user"
	"strconv"
	"strings"

	"github.com/seed722d2a70/meshproxy/ports"
)

// Defaults, the same as Linkerd's proxy-init so that existing manifests and
// NetworkPolicies carry over.
const (
	DefaultProxyUID     = 2102
	DefaultInboundPort  = 4143
	DefaultOutboundPort = 4140
	DefaultAdminPort    = 4191
)

// ErrInvalidConfig is returned (wrapped) for a Config or a flag value that
// cannot be turned into rules. Nothing is written when it is returned.
var ErrInvalidConfig = errors.New("invalid interception settings")

// Config says which connections are redirected where.
type Config struct {
	// ProxyUID is the UID the proxy runs as. Its own connections are never
	// redirected: without this exemption the proxy's connection to a peer
	// would be sent back to itself. It must not be 0, which would exempt
	// every process running as root.
	ProxyUID uint32

	// InboundPort receives every TCP connection into the pod (4143).
	InboundPort uint16
	// OutboundPort receives every TCP connection the pod makes (4140).
	OutboundPort uint16
	// AdminPort is the proxy's admin server (4191). Connections to it are
	// not redirected, so probes and metric scrapes reach it directly.
	AdminPort uint16

	// SkipInboundPorts are destination ports on the pod that bypass the
	// inbound proxy and reach the application directly.
	SkipInboundPorts ports.Set
	// SkipOutboundPorts are destination ports that the pod's connections
	// reach directly, bypassing the outbound proxy.
	SkipOutboundPorts ports.Set
	// SkipOutboundCIDRs are destination networks reached directly. Each
	// applies to the rules of its own address family only.
	SkipOutboundCIDRs []netip.Prefix
}

// DefaultConfig returns the Config with the default UID and ports and
// nothing skipped.
func DefaultConfig() Config {
	return Config{
		ProxyUID:     DefaultProxyUID,
		InboundPort:  DefaultInboundPort,
		OutboundPort: DefaultOutboundPort,
		AdminPort:    DefaultAdminPort,
	}
}

// Validate reports the first setting that cannot be turned into rules.
func (c Config) Validate() error {
	if c.ProxyUID == 0 {
		return fmt.Errorf("%w: proxy UID 0 would exempt every process running as root from interception", ErrInvalidConfig)
	}
	for _, p := range []struct {
		name string
		port uint16
	}{
		{"inbound port", c.InboundPort},
		{"outbound port", c.OutboundPort},
		{"admin port", c.AdminPort},
	} {
		if p.port == 0 {
			return fmt.Errorf("%w: %s 0 is not a port (1-65535)", ErrInvalidConfig, p.name)
		}
	}
	if c.InboundPort == c.OutboundPort || c.InboundPort == c.AdminPort || c.OutboundPort == c.AdminPort {
		return fmt.Errorf("%w: inbound, outbound and admin ports must differ, got %d, %d and %d",
			ErrInvalidConfig, c.InboundPort, c.OutboundPort, c.AdminPort)
	}
	for _, p := range c.SkipOutboundCIDRs {
		if !p.IsValid() {
			return fmt.Errorf("%w: invalid skipped CIDR", ErrInvalidConfig)
		}
	}
	return nil
}

// ParsePort parses a single port, 1..65535, as the port flags take it.
func ParsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%w: %q is not a port (1-65535)", ErrInvalidConfig, s)
	}
	return uint16(n), nil
}

// ParseUID resolves the proxy's user: a numeric UID is taken as it is (the
// user need not exist in /etc/passwd, as is usual for a container's
// runAsUser); anything else is looked up as a user name.
func ParseUID(s string) (uint32, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("%w: empty proxy UID", ErrInvalidConfig)
	}
	if s[0] >= '0' && s[0] <= '9' {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil || n == 1<<32-1 { // (uid_t)-1 means "no change" to the kernel
			return 0, fmt.Errorf("%w: %q is not a UID", ErrInvalidConfig, s)
		}
		return uint32(n), nil
	}
	u, err := user.Lookup(s)
	if err != nil {
		return 0, fmt.Errorf("%w: proxy user %q: %w", ErrInvalidConfig, s, err)
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%w: user %q has UID %q, which is not numeric", ErrInvalidConfig, s, u.Uid)
	}
	return uint32(n), nil
}

// ParseCIDRs parses a comma-separated list of networks such as
// "10.0.0.0/8, fd00::/8". A bare address stands for itself (/32 or /128).
// Host bits are cleared: 10.1.2.3/8 is 10.0.0.0/8. An empty string is an
// empty list.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		var p netip.Prefix
		if strings.Contains(item, "/") {
			var err error
			if p, err = netip.ParsePrefix(item); err != nil {
				return nil, fmt.Errorf("%w: %q is not a CIDR", ErrInvalidConfig, item)
			}
		} else {
			a, err := netip.ParseAddr(item)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%w: %q is not an address or a CIDR", ErrInvalidConfig, item)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
