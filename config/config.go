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
	"time"

	"github.com/seed722d2a70/meshproxy/ports"
)

// Default ports of the proxy, as in Linkerd.
const (
	DefaultInboundPort  = 4143
	DefaultOutboundPort = 4140
	DefaultAdminPort    = 4191
)

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
	Log      Log      `yaml:"log"`
	Admin    Admin    `yaml:"admin"`
	Inbound  Inbound  `yaml:"inbound"`
	Outbound Outbound `yaml:"outbound"`
	Detect   Detect   `yaml:"detect"`

	// OpaquePorts is the default set of ports whose traffic is proxied as
	// opaque TCP without detection.
	OpaquePorts ports.Set `yaml:"opaquePorts"`

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
}

// Outbound configures the outbound proxy, which receives the app's traffic.
type Outbound struct {
	Addr string `yaml:"addr"`
}

// Detect configures protocol detection.
type Detect struct {
	// Timeout is how long detection waits for the client's first bytes
	// before proceeding as opaque TCP.
	Timeout time.Duration `yaml:"timeout"`
}

// Default returns the configuration used when nothing else is given.
func Default() Config {
	return Config{
		Log:           Log{Level: "info", Format: "json"},
		Admin:         Admin{Addr: fmt.Sprintf("0.0.0.0:%d", DefaultAdminPort)},
		Inbound:       Inbound{Addr: fmt.Sprintf("0.0.0.0:%d", DefaultInboundPort)},
		Outbound:      Outbound{Addr: fmt.Sprintf("127.0.0.1:%d", DefaultOutboundPort)},
		Detect:        Detect{Timeout: 10 * time.Second},
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
	if c.Detect.Timeout <= 0 {
		return fmt.Errorf("%w: detect timeout must be positive, got %v", ErrInvalid, c.Detect.Timeout)
	}
	if c.ShutdownGrace < 0 {
		return fmt.Errorf("%w: shutdown grace must not be negative, got %v", ErrInvalid, c.ShutdownGrace)
	}
	return nil
}
