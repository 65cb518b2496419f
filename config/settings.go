package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

const envPrefix = "MESHPROXY_"

// setting is one value settable by flag and environment variable.
type setting struct {
	name  string // flag name; the env name is derived from it
	usage string
	set   func(c *Config, v string) error
	get   func(c *Config) string // for -help's defaults; nil to show none
	// repeated settings may be given several times on the command line;
	// set is called with "" first to clear the value, then once per flag.
	repeated bool
	// isBool settings may be given as a bare flag (-transparent), meaning
	// true, like the standard flag package's booleans.
	isBool bool
}

// env returns the environment variable for s: MESHPROXY_ and the flag name
// in upper case with dashes as underscores.
func (s setting) env() string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(s.name, "-", "_"))
}

func strSetting(name, usage string, field func(*Config) *string) setting {
	return setting{
		name: name, usage: usage,
		set: func(c *Config, v string) error { *field(c) = v; return nil },
		get: func(c *Config) string { return *field(c) },
	}
}

func durationSetting(name, usage string, field func(*Config) *time.Duration) setting {
	return setting{
		name: name, usage: usage,
		set: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return err
			}
			*field(c) = d
			return nil
		},
		get: func(c *Config) string { return field(c).String() },
	}
}

func intSetting(name, usage string, field func(*Config) *int) setting {
	return setting{
		name: name, usage: usage,
		set: func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return err
			}
			*field(c) = n
			return nil
		},
		get: func(c *Config) string { return strconv.Itoa(*field(c)) },
	}
}

func boolSetting(name, usage string, field func(*Config) *bool) setting {
	return setting{
		name: name, usage: usage, isBool: true,
		set: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return err
			}
			*field(c) = b
			return nil
		},
	}
}

// listSetting is a comma-separated list; as a flag it may also be repeated.
func listSetting(name, usage string, field func(*Config) *[]string) setting {
	return setting{
		name: name, usage: usage, repeated: true,
		set: func(c *Config, v string) error {
			if v == "" {
				*field(c) = nil
				return nil
			}
			for item := range strings.SplitSeq(v, ",") {
				if item = strings.TrimSpace(item); item != "" {
					*field(c) = append(*field(c), item)
				}
			}
			return nil
		},
	}
}

// settings lists every flag, in the order -help shows them.
var settings = []setting{
	strSetting("log-level", "log level: debug, info, warn or error", func(c *Config) *string { return &c.Log.Level }),
	strSetting("log-format", "log format: json or console", func(c *Config) *string { return &c.Log.Format }),
	strSetting("admin-addr", "admin server address (/live, /ready, /metrics)", func(c *Config) *string { return &c.Admin.Addr }),
	strSetting("inbound-addr", "inbound proxy address, receiving mesh traffic", func(c *Config) *string { return &c.Inbound.Addr }),
	strSetting("outbound-addr", "outbound proxy address, receiving the app's traffic", func(c *Config) *string { return &c.Outbound.Addr }),
	durationSetting("detect-timeout", "how long protocol detection waits for client bytes", func(c *Config) *time.Duration { return &c.Detect.Timeout }),
	durationSetting("detect-speculate-after", "silence after which a client's destination is connected speculatively to catch server-first protocols (0: off)",
		func(c *Config) *time.Duration { return &c.Detect.SpeculateAfter }),
	{
		name: "no-speculate-ports", usage: "ports where speculative connections are never made",
		set: func(c *Config, v string) error { return c.Detect.NoSpeculatePorts.UnmarshalText([]byte(v)) },
	},
	durationSetting("server-first-ttl", "how long a destination seen speaking first skips detection", func(c *Config) *time.Duration { return &c.Detect.ServerFirstTTL }),
	{
		name: "opaque-ports", usage: "ports proxied as opaque TCP without detection, e.g. 25,587,4000-4100",
		set: func(c *Config, v string) error { return c.OpaquePorts.UnmarshalText([]byte(v)) },
		get: func(c *Config) string { return c.OpaquePorts.String() },
	},
	durationSetting("half-close-timeout", "after one direction of a connection ends, how long the other may go on (0: no limit)",
		func(c *Config) *time.Duration { return &c.HalfCloseTimeout }),
	boolSetting("transparent", "the pod's traffic is redirected to the proxy by 'meshproxy init': read original destinations, accept redirected inbound connections",
		func(c *Config) *bool { return &c.Transparent }),
	boolSetting("http2-relay", "carry HTTP/2 and gRPC with the frame relay; false carries them with net/http's server and transport (slower)",
		func(c *Config) *bool { return &c.HTTP2Relay }),
	durationSetting("shutdown-grace", "how long connections may drain after SIGTERM", func(c *Config) *time.Duration { return &c.ShutdownGrace }),

	// Inbound.
	strSetting("workload-host", "address of the local workload the inbound proxy forwards to", func(c *Config) *string { return &c.Inbound.WorkloadHost }),
	listSetting("inbound-authorize", "peers allowed inbound: SPIFFE IDs, spiffe://td/prefix/*, trust domains or * (default: own trust domain)", func(c *Config) *[]string { return &c.Inbound.Authorize }),
	{
		name: "inbound-allow-ports", usage: "when set, the only workload ports the inbound proxy forwards to",
		set: func(c *Config, v string) error { return c.Inbound.AllowPorts.UnmarshalText([]byte(v)) },
	},
	boolSetting("inbound-require-identity", "refuse plaintext (unmeshed) clients redirected to the inbound proxy on every port",
		func(c *Config) *bool { return &c.Inbound.RequireIdentity }),
	{
		name: "inbound-require-identity-ports", usage: "ports on which plaintext (unmeshed) clients are refused",
		set: func(c *Config, v string) error { return c.Inbound.RequireIdentityPorts.UnmarshalText([]byte(v)) },
	},

	durationSetting("inbound-handshake-timeout", "bound on a peer's mTLS handshake on the inbound port, from accept",
		func(c *Config) *time.Duration { return &c.Inbound.HandshakeTimeout }),
	intSetting("inbound-max-pending", "most inbound connections not yet authenticated; past it the oldest is reset",
		func(c *Config) *int { return &c.Inbound.MaxPending }),
	intSetting("inbound-max-pending-per-source", "most inbound connections not yet authenticated from one source (IPv4 address, IPv6 /64); past it new ones are reset (0: 128, at most --inbound-max-pending)",
		func(c *Config) *int { return &c.Inbound.MaxPendingPerSource }),
	intSetting("inbound-max-handshake-bytes", "most bytes a peer may send before its TLS handshake completes; past it the connection is refused",
		func(c *Config) *int { return &c.Inbound.MaxHandshakeBytes }),
	intSetting("inbound-max-unmeshed-http", "most unmeshed clients' HTTP connections the inbound proxy serves itself (transparent mode); past it new ones are reset",
		func(c *Config) *int { return &c.Inbound.MaxUnmeshedHTTP }),
	intSetting("inbound-max-unmeshed-http-per-source", "the same from one source (IPv4 address, IPv6 /64) (0: 128, at most --inbound-max-unmeshed-http)",
		func(c *Config) *int { return &c.Inbound.MaxUnmeshedHTTPPerSource }),

	// Outbound.
	{
		name: "outbound-listener", usage: "explicit outbound listener LISTEN=TARGET, e.g. 127.0.0.1:16379=redis.demo:6379 (repeatable)",
		repeated: true,
		set: func(c *Config, v string) error {
			if v == "" {
				c.Outbound.Listeners = nil
				return nil
			}
			for item := range strings.SplitSeq(v, ",") {
				listen, target, ok := strings.Cut(strings.TrimSpace(item), "=")
				if !ok {
					return fmt.Errorf("want LISTEN=TARGET, got %q", item)
				}
				c.Outbound.Listeners = append(c.Outbound.Listeners, Listener{Listen: listen, Target: target})
			}
			return nil
		},
	},
	listSetting("meshed-networks", "CIDRs whose destinations are meshed (own trust domain, port 4143) unless the destination table says otherwise, e.g. 10.0.0.0/8,fd00::/8",
		func(c *Config) *[]string { return &c.MeshedNetworks }),
	boolSetting("refuse-unmeshed", "refuse outbound connections to destinations not in the destination table", func(c *Config) *bool { return &c.Outbound.RefuseUnmeshed }),
	durationSetting("dial-timeout", "bound on connecting and handshaking to a peer", func(c *Config) *time.Duration { return &c.Outbound.DialTimeout }),
	intSetting("outbound-max-handshakes-per-destination", "most concurrent outbound handshakes (connect, mTLS, header) to one destination; more wait within --dial-timeout",
		func(c *Config) *int { return &c.Outbound.MaxHandshakesPerDestination }),
	strSetting("destination-addr", "destination controller (host:port) asked what is at each destination IP before the destination table; empty: none",
		func(c *Config) *string { return &c.Outbound.DestinationAddr }),
	listSetting("destination-identity", "whom the destination controller must be: SPIFFE IDs, spiffe://td/prefix/*, trust domains (default: spiffe://OWN-TRUST-DOMAIN/ns/meshproxy/sa/meshproxy-destination)",
		func(c *Config) *[]string { return &c.Outbound.DestinationIdentity }),
	durationSetting("destination-wait", "how long a connection waits for the destination controller's first answer about its destination before the table decides",
		func(c *Config) *time.Duration { return &c.Outbound.DestinationWait }),
	durationSetting("http-response-timeout", "bound on the wait for an HTTP response's headers, answered 504 past it (0: no limit)",
		func(c *Config) *time.Duration { return &c.Outbound.ResponseTimeout }),

	// Identity.
	strSetting("spiffe-socket", "SPIFFE Workload API socket, e.g. unix:///run/spire/agent.sock (also SPIFFE_ENDPOINT_SOCKET)", func(c *Config) *string { return &c.Identity.SPIFFESocket }),
	strSetting("identity-cert", "PEM SVID certificate chain file (reloaded on change)", func(c *Config) *string { return &c.Identity.CertFile }),
	strSetting("identity-key", "PEM SVID private key file", func(c *Config) *string { return &c.Identity.KeyFile }),
	strSetting("identity-bundle", "PEM trust bundle file", func(c *Config) *string { return &c.Identity.BundleFile }),
	strSetting("trust-domain", "trust domain of the embedded dev CA", func(c *Config) *string { return &c.Identity.TrustDomain }),
	strSetting("identity-id", "SPIFFE ID the embedded dev CA issues to this proxy (default spiffe://TRUST-DOMAIN/meshproxy)", func(c *Config) *string { return &c.Identity.ID }),
	strSetting("ca-dir", "directory of the dev CA written by 'meshproxy ca init' (default $XDG_CONFIG_HOME/meshproxy/ca, else ~/.config/meshproxy/ca)", func(c *Config) *string { return &c.Identity.CADir }),
	durationSetting("svid-ttl", "lifetime of dev-CA SVIDs (rotated at half life)", func(c *Config) *time.Duration { return &c.Identity.SVIDTTL }),
}
