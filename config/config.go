// Package config holds meshproxy's settings and loads them from, in rising
// order of precedence: built-in defaults, an optional YAML file, MESHPROXY_*
// environment variables, and command-line flags.
//
// Every setting that can be given as a flag is declared once, in settings.go;
// its environment variable name is derived from the flag name, so the two can
// never drift apart.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/seed722d2a70/meshproxy/ports"
)

// Default ports of the proxy, as in Linkerd.
const (
	DefaultInboundPort  = 4143
	DefaultOutboundPort = 4140
	DefaultAdminPort    = 4191
)

// Overload limits (inbound/pending.go, outbound/handshakes.go).
//
// A connection pending on the inbound port (not yet authenticated) costs
// about 5 KiB of Go memory while it waits for its first byte
// (BenchmarkPendingHandshakeMemory: 4 KiB of goroutine stack, 1 KiB of
// heap). Once its peer sends, crypto/tls buffers each handshake message
// whole before verifying anything (it accepts 64 KiB, 256 KiB for a
// Certificate), so the peer may send at most DefaultMaxHandshakeBytes
// before its handshake completes: 12 KiB, twice a full handshake's flights
// with a three-certificate SVID chain. A peer that sent all of it and
// stalls is the worst case, measured at 36 KiB (TestPendingWorstCaseCost:
// 28 KiB of heap, the record and message buffers, and 8 KiB of stack;
// 44 KiB at a 16 KiB budget, 420 KiB or more without one). 1024 of them are
// 36 MiB, and the header stage's 128 (an eighth) at most 4.5 MiB more:
// with the proxy's own ~20 MiB, 61 MiB, under a 64 MiB budget. Silent, they
// are 5 MiB. 128 per source is twice an outbound proxy's own cap on
// concurrent handshakes to one destination (64), so a well-behaved peer
// proxy never reaches it, while it takes eight sources to fill the total.
//
// Unmeshed clients' HTTP connections the proxy serves itself (transparent
// mode) cost about 18 KiB each with a slow request head (a reader, the
// connection's goroutines); the default 512 are 9 MiB. That budget is
// separate: only pods with unmeshed HTTP clients need it.
const (
	DefaultMaxPending                  = 1024
	DefaultMaxPendingPerSource         = 128
	DefaultMaxHandshakeBytes           = 12 << 10
	DefaultMaxUnmeshedHTTP             = 512
	DefaultMaxUnmeshedHTTPPerSource    = 128
	DefaultMaxHandshakesPerDestination = 64
)

// DefaultDestinationIDPath is the path of the destination controller's
// SPIFFE ID as installed: its service account meshproxy-destination in the
// namespace meshproxy (the SPIRE convention).
const DefaultDestinationIDPath = "/ns/meshproxy/sa/meshproxy-destination"

// DefaultOpaquePorts are the ports on which protocol detection is skipped
// unless configured otherwise: protocols whose server speaks first or that
// interact badly with detection. NATS (4222, 6222, 8222) and Galera (4567,
// 4568) are deliberately not in the list, matching Linkerd's default.
const DefaultOpaquePorts = "25,587,3306,4444,5432,6379,9300,11211"

// ErrInvalid is returned (wrapped) for a configuration that cannot be used.
var ErrInvalid = errors.New("invalid configuration")

// Config is the whole configuration of a proxy. Its YAML form uses the field
// tags below; Default returns the values used when nothing is configured.
type Config struct {
	// Path is the file the configuration was read from, if any; the proxy
	// watches it for destination changes.
	Path string `yaml:"-"`

	Log      Log      `yaml:"log"`
	Admin    Admin    `yaml:"admin"`
	Inbound  Inbound  `yaml:"inbound"`
	Outbound Outbound `yaml:"outbound"`
	Detect   Detect   `yaml:"detect"`
	Identity Identity `yaml:"identity"`

	// Destinations is the outbound destination table. It is re-read from
	// the config file when the file changes, without dropping connections.
	Destinations []Destination `yaml:"destinations"`

	// MeshedNetworks are CIDRs whose destinations are taken to be meshed
	// when no destination entry matches them: their proxy must present an
	// identity of the own trust domain on port 4143, and the global opaque
	// ports apply. Explicit entries always win, so an unmeshed host inside
	// these networks is listed as meshed: false. Like Linkerd's
	// clusterNetworks; injection sets the pod networks. Empty by default.
	// They keep their start value when the file reloads, since a flag or
	// the environment may have set them.
	MeshedNetworks []string `yaml:"meshedNetworks"`

	// OpaquePorts is the default set of ports whose traffic is proxied as
	// opaque TCP without detection.
	OpaquePorts ports.Set `yaml:"opaquePorts"`

	// HalfCloseTimeout, when positive, bounds how long a connection may stay
	// half-closed: after one direction ends, the other gets this long before
	// both are closed, a guard against peers that never close. 0 (the
	// default) lets half-closed streams run as long as they carry data, as a
	// TCP proxy should; dead peers are found by TCP keepalives.
	HalfCloseTimeout time.Duration `yaml:"halfCloseTimeout"`

	// Transparent says that `meshproxy init` redirects the pod's TCP
	// traffic to the proxy: the outbound listener then carries each
	// connection to its original destination (SO_ORIGINAL_DST), and the
	// inbound listener also takes connections redirected from app ports,
	// from peer proxies (mTLS) and from unmeshed clients (plaintext).
	Transparent bool `yaml:"transparent"`

	// HTTP2Relay carries HTTP/2 (so gRPC) with the frame relay
	// (httpproxy/h2*.go, docs/http2-relay.md), the default: about 4x the
	// gRPC unary calls/s of net/http's server and transport, which false
	// keeps as a fallback.
	HTTP2Relay bool `yaml:"http2Relay"`

	// ShutdownGrace is how long the proxy lets established connections
	// drain after SIGTERM before closing them. It should be shorter than the
	// pod's terminationGracePeriodSeconds (30 s by default in Kubernetes).
	ShutdownGrace time.Duration `yaml:"shutdownGrace"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // json (default) or console
}

// Admin configures the admin server.
type Admin struct {
	Addr string `yaml:"addr"`
}

// Inbound configures the inbound proxy, which receives mesh traffic.
type Inbound struct {
	Addr string `yaml:"addr"`

	// WorkloadHost is the address of the local workload, to which the
	// inbound proxy forwards. Only the port comes from the peer; the host is
	// always this one, so a peer can never make the proxy dial elsewhere.
	WorkloadHost string `yaml:"workloadHost"`

	// Authorize lists the peers allowed on ports without a policy of their
	// own: SPIFFE IDs, "spiffe://td/path/*" prefixes, trust domains, or "*".
	// Empty means any identity in the proxy's own trust domain.
	Authorize []string `yaml:"authorize"`

	// AllowPorts, when not empty, is the only set of workload ports the
	// inbound proxy forwards to.
	AllowPorts ports.Set `yaml:"allowPorts"`

	// Ports are per-port policies, consulted before the defaults above.
	Ports []PortPolicy `yaml:"ports"`

	// RequireIdentity refuses plaintext connections from unmeshed clients
	// on every workload port; RequireIdentityPorts on these ports only
	// (Linkerd's proxy-require-identity-inbound-ports). By default such
	// clients are let through, labelled tls="no_identity". They can only
	// arrive in transparent mode, redirected from an app port.
	RequireIdentity      bool      `yaml:"requireIdentity"`
	RequireIdentityPorts ports.Set `yaml:"requireIdentityPorts"`

	// HandshakeTimeout bounds the TLS handshake and HeaderTimeout the
	// transport header read: the work a peer can make us do before it has
	// proven who it is and what it wants.
	HandshakeTimeout time.Duration `yaml:"handshakeTimeout"`
	HeaderTimeout    time.Duration `yaml:"headerTimeout"`

	// MaxPending caps the connections whose peer has not yet authenticated
	// (or, redirected, whose detection has not yet decided), and
	// MaxPendingPerSource those from one source address. Past the total,
	// the oldest is reset to make room; past a source's, its new one is.
	// The defaults fit a 64 MiB memory budget (inbound/pending.go).
	// MaxPendingPerSource 0 (the default) is DefaultMaxPendingPerSource,
	// or MaxPending when that is smaller.
	MaxPending          int `yaml:"maxPending"`
	MaxPendingPerSource int `yaml:"maxPendingPerSource"`

	// MaxHandshakeBytes is what a peer may send before its TLS handshake
	// completes; past it the connection is refused (handshake_too_large).
	MaxHandshakeBytes int `yaml:"maxHandshakeBytes"`

	// MaxUnmeshedHTTP and MaxUnmeshedHTTPPerSource cap the unmeshed
	// clients' HTTP connections the proxy serves itself (transparent
	// mode); past them new ones are reset. Per source 0 (the default) is
	// DefaultMaxUnmeshedHTTPPerSource, or MaxUnmeshedHTTP when smaller.
	MaxUnmeshedHTTP          int `yaml:"maxUnmeshedHTTP"`
	MaxUnmeshedHTTPPerSource int `yaml:"maxUnmeshedHTTPPerSource"`
}

// PortPolicy is the inbound policy of a set of workload ports, like a
// Linkerd Server resource.
type PortPolicy struct {
	Ports ports.Set `yaml:"ports"`
	// Authorize overrides Inbound.Authorize for these ports.
	Authorize []string `yaml:"authorize"`
	// Protocol is the ports' protocol hint: unknown (detect), HTTP/1,
	// HTTP/2, gRPC, opaque or TLS. Opaque and TLS ports are forwarded
	// without detection.
	Protocol string `yaml:"protocol"`
}

// Outbound configures the outbound proxy, which receives the app's traffic.
type Outbound struct {
	Addr string `yaml:"addr"`

	// Listeners are explicit-mode listeners: each a local address the app
	// connects to instead of its real destination.
	Listeners []Listener `yaml:"listeners"`

	// RefuseUnmeshed makes connections to destinations that are not in the
	// destination table fail instead of going out as plain TCP.
	RefuseUnmeshed bool `yaml:"refuseUnmeshed"`

	// DialTimeout bounds connecting (and the mTLS handshake) to a peer.
	DialTimeout time.Duration `yaml:"dialTimeout"`

	// MaxHandshakesPerDestination caps the concurrent handshakes (connect,
	// mTLS, transport header) to one destination address; more wait, in
	// order, within DialTimeout.
	MaxHandshakesPerDestination int `yaml:"maxHandshakesPerDestination"`

	// ResponseTimeout, when positive, bounds the wait for an HTTP
	// response's headers once the request is sent; past it the client gets
	// 504. 0 waits as long as the client does.
	ResponseTimeout time.Duration `yaml:"responseTimeout"`

	// DestinationAddr is the destination controller (`meshproxy
	// destination`, host:port), asked what is at each destination IP
	// before the destination table; empty: none.
	DestinationAddr string `yaml:"destinationAddr"`
	// DestinationIdentity is whom the controller must prove to be: SPIFFE
	// IDs, prefixes or trust domains; empty: the ID `meshproxy install`
	// gives it in the own trust domain (DefaultDestinationIDPath). Its
	// answers decide which identities the mesh's endpoints must present,
	// so no other workload may pass for it.
	DestinationIdentity []string `yaml:"destinationIdentity"`
	// DestinationWait bounds how long a connection to a destination the
	// controller never answered for waits before the table decides.
	DestinationWait time.Duration `yaml:"destinationWait"`
}

// Listener is one explicit-mode outbound listener.
type Listener struct {
	Listen string `yaml:"listen"` // e.g. 127.0.0.1:16379
	Target string `yaml:"target"` // e.g. redis.demo:6379
}

// Destination says what the outbound proxy knows about a target. The
// destination table can be changed while the proxy runs; see Destinations.
type Destination struct {
	// Match is an IP address, a CIDR, or a host name, optionally with
	// ":port" (for a CIDR: "10.0.0.0/8:6379" is not accepted; use Ports).
	Match string `yaml:"match"`
	// Meshed says whether the destination runs a meshproxy inbound proxy.
	// Defaults to true for a listed destination.
	Meshed *bool `yaml:"meshed"`
	// Identity is what the destination's proxy must present: SPIFFE IDs,
	// prefixes or trust domains. Empty means the proxy's own trust domain.
	Identity []string `yaml:"identity"`
	// OpaquePorts overrides the global opaque ports for this destination.
	OpaquePorts *ports.Set `yaml:"opaquePorts"`
	// InboundPort is the destination's inbound proxy port (default 4143).
	InboundPort uint16 `yaml:"inboundPort"`
	// Address, when set, is dialed instead of the matched host: for names
	// that do not resolve, such as in demos.
	Address string `yaml:"address"`
}

// Identity configures where the proxy's SPIFFE identity comes from. Exactly
// one source is used: the Workload API when a socket is configured, else
// files when a certificate is configured, else the embedded dev CA.
type Identity struct {
	// SPIFFESocket is the Workload API address, e.g.
	// unix:///run/spire/agent.sock. SPIFFE_ENDPOINT_SOCKET is honoured too.
	SPIFFESocket string `yaml:"spiffeSocket"`

	// CertFile, KeyFile and BundleFile are PEM files, reloaded on change.
	CertFile   string `yaml:"certFile"`
	KeyFile    string `yaml:"keyFile"`
	BundleFile string `yaml:"bundleFile"`

	// TrustDomain is the proxy's trust domain for the embedded dev CA, and
	// the default authorization for peers.
	TrustDomain string `yaml:"trustDomain"`
	// ID is the SPIFFE ID the embedded dev CA issues to this proxy.
	ID string `yaml:"id"`
	// CADir holds the dev CA written by `meshproxy ca init`.
	CADir string `yaml:"caDir"`
	// SVIDTTL is the lifetime of dev-CA SVIDs; they rotate at half life.
	SVIDTTL time.Duration `yaml:"svidTTL"`
}

// Detect configures protocol detection.
type Detect struct {
	// Timeout is how long detection waits for the client's first bytes
	// before proceeding as opaque TCP.
	Timeout time.Duration `yaml:"timeout"`

	// SpeculateAfter is how long a silent client waits before the proxy
	// connects to its destination speculatively, to find out whether the
	// server speaks first (then the greeting is delivered at once instead
	// of after Timeout). 0 turns speculation off.
	SpeculateAfter time.Duration `yaml:"speculateAfter"`
	// NoSpeculatePorts are ports where speculation never happens, for
	// destinations where an extra connection is not acceptable.
	NoSpeculatePorts ports.Set `yaml:"noSpeculatePorts"`
	// ServerFirstTTL is how long a destination seen speaking first is
	// remembered (skipping detection); ServerFirstMax bounds how many are.
	ServerFirstTTL time.Duration `yaml:"serverFirstTTL"`
	ServerFirstMax int           `yaml:"serverFirstMax"`
}

// Default returns the configuration used when nothing else is given.
func Default() Config {
	return Config{
		Log:        Log{Level: "info", Format: "json"},
		Admin:      Admin{Addr: fmt.Sprintf("0.0.0.0:%d", DefaultAdminPort)},
		HTTP2Relay: true,
		Inbound: Inbound{
			Addr:              fmt.Sprintf("0.0.0.0:%d", DefaultInboundPort),
			WorkloadHost:      "127.0.0.1",
			HandshakeTimeout:  10 * time.Second,
			HeaderTimeout:     10 * time.Second,
			MaxPending:        DefaultMaxPending,
			MaxHandshakeBytes: DefaultMaxHandshakeBytes,
			MaxUnmeshedHTTP:   DefaultMaxUnmeshedHTTP,
		},
		Outbound: Outbound{
			Addr:                        fmt.Sprintf("127.0.0.1:%d", DefaultOutboundPort),
			DialTimeout:                 10 * time.Second,
			DestinationWait:             time.Second,
			MaxHandshakesPerDestination: DefaultMaxHandshakesPerDestination,
		},
		Identity: Identity{
			TrustDomain: "mesh.local",
			SVIDTTL:     time.Hour,
		},
		Detect: Detect{
			Timeout:        10 * time.Second,
			SpeculateAfter: 100 * time.Millisecond,
			ServerFirstTTL: 10 * time.Minute,
			ServerFirstMax: 4096,
		},
		OpaquePorts:   ports.MustParse(DefaultOpaquePorts),
		ShutdownGrace: 30 * time.Second,
	}
}

// Validate reports the first problem that would keep the proxy from running.
func (c *Config) Validate() error {
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("%w: log level %q (want debug, info, warn or error)", ErrInvalid, c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		return fmt.Errorf("%w: log format %q (want json or console)", ErrInvalid, c.Log.Format)
	}
	for _, a := range []struct{ name, addr string }{
		{"admin address", c.Admin.Addr},
		{"inbound address", c.Inbound.Addr},
		{"outbound address", c.Outbound.Addr},
	} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("%w: %s %q: %v", ErrInvalid, a.name, a.addr, err)
		}
	}
	for _, l := range c.Outbound.Listeners {
		if _, _, err := net.SplitHostPort(l.Listen); err != nil {
			return fmt.Errorf("%w: outbound listener address %q: %v", ErrInvalid, l.Listen, err)
		}
		if _, _, err := net.SplitHostPort(l.Target); err != nil {
			return fmt.Errorf("%w: outbound listener target %q: %v", ErrInvalid, l.Target, err)
		}
	}
	for i, d := range c.Destinations {
		if d.Match == "" {
			return fmt.Errorf("%w: destination %d has no match", ErrInvalid, i)
		}
	}
	for _, n := range c.MeshedNetworks {
		if err := CheckNetwork(n); err != nil {
			return fmt.Errorf("%w: meshed network %q: %v", ErrInvalid, n, err)
		}
	}
	for i, p := range c.Inbound.Ports {
		if p.Ports.Len() == 0 {
			return fmt.Errorf("%w: inbound port policy %d lists no ports", ErrInvalid, i)
		}
		switch p.Protocol {
		case "", "unknown", "HTTP/1", "HTTP/2", "gRPC", "opaque", "TLS":
		default:
			return fmt.Errorf("%w: inbound port policy %d: protocol %q (want unknown, HTTP/1, HTTP/2, gRPC, opaque or TLS)", ErrInvalid, i, p.Protocol)
		}
	}
	if net.ParseIP(c.Inbound.WorkloadHost) == nil && c.Inbound.WorkloadHost != "localhost" {
		return fmt.Errorf("%w: workload host %q must be an IP address", ErrInvalid, c.Inbound.WorkloadHost)
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"detect timeout", c.Detect.Timeout},
		{"inbound handshake timeout", c.Inbound.HandshakeTimeout},
		{"inbound header timeout", c.Inbound.HeaderTimeout},
		{"outbound dial timeout", c.Outbound.DialTimeout},
		{"destination wait", c.Outbound.DestinationWait},
		{"SVID TTL", c.Identity.SVIDTTL},
	} {
		if d.d <= 0 {
			return fmt.Errorf("%w: %s must be positive, got %v", ErrInvalid, d.name, d.d)
		}
	}
	if c.Identity.SVIDTTL < time.Second {
		// The dev CA issues nothing shorter (identity.MinSVIDTTL).
		return fmt.Errorf("%w: SVID TTL must be at least 1s, got %v", ErrInvalid, c.Identity.SVIDTTL)
	}
	if c.Detect.SpeculateAfter < 0 || c.Detect.ServerFirstTTL < 0 || c.Detect.ServerFirstMax < 0 {
		return fmt.Errorf("%w: detect speculateAfter, serverFirstTTL and serverFirstMax must not be negative", ErrInvalid)
	}
	for _, l := range []struct {
		name string
		n    int
	}{
		{"inbound max pending", c.Inbound.MaxPending},
		{"inbound max handshake bytes", c.Inbound.MaxHandshakeBytes},
		{"inbound max unmeshed HTTP", c.Inbound.MaxUnmeshedHTTP},
		{"outbound max handshakes per destination", c.Outbound.MaxHandshakesPerDestination},
	} {
		if l.n <= 0 {
			return fmt.Errorf("%w: %s must be positive, got %d", ErrInvalid, l.name, l.n)
		}
	}
	// A per-source cap left unset follows its total down; one set
	// explicitly must fit in it.
	for _, l := range []struct {
		name, totalName         string
		perSource               *int
		total, defaultPerSource int
	}{
		{"inbound max pending per source", "inbound max pending", &c.Inbound.MaxPendingPerSource, c.Inbound.MaxPending, DefaultMaxPendingPerSource},
		{"inbound max unmeshed HTTP per source", "inbound max unmeshed HTTP", &c.Inbound.MaxUnmeshedHTTPPerSource, c.Inbound.MaxUnmeshedHTTP, DefaultMaxUnmeshedHTTPPerSource},
	} {
		switch {
		case *l.perSource < 0:
			return fmt.Errorf("%w: %s must be positive, got %d", ErrInvalid, l.name, *l.perSource)
		case *l.perSource == 0:
			*l.perSource = min(l.defaultPerSource, l.total)
		case *l.perSource > l.total:
			return fmt.Errorf("%w: %s (%d) exceeds %s (%d)", ErrInvalid, l.name, *l.perSource, l.totalName, l.total)
		}
	}
	if c.HalfCloseTimeout < 0 {
		return fmt.Errorf("%w: half-close timeout must not be negative, got %v", ErrInvalid, c.HalfCloseTimeout)
	}
	if c.ShutdownGrace < 0 {
		return fmt.Errorf("%w: shutdown grace must not be negative, got %v", ErrInvalid, c.ShutdownGrace)
	}
	return nil
}

// CheckNetwork reports whether s is a CIDR that can name a meshed network:
// an IPv4 or IPv6 prefix such as 10.0.0.0/8 or fd00::/8, without a zone.
// Host bits may be set; they are ignored.
func CheckNetwork(s string) error {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("want a CIDR such as 10.0.0.0/8 or fd00::/8: %w", err)
	}
	if p.Addr().Is4In6() {
		return errors.New("an IPv4-mapped IPv6 prefix never matches; write the IPv4 CIDR")
	}
	return nil
}
