package config

import (
	"strings"
	"time"
)

const envPrefix = "MESHPROXY_"

// setting is one value settable by flag and environment variable.
type setting struct {
	name  string // flag name; the env name is derived from it
	usage string
	set   func(c *Config, v string) error
}

// env returns the environment variable for s: MESHPROXY_ and the flag name
// in upper case with dashes as underscores.
func (s setting) env() string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(s.name, "-", "_"))
}

func str(field func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *field(c) = v; return nil }
}

func duration(field func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return err
		}
		*field(c) = d
		return nil
	}
}

// settings lists every flag, in the order -help shows them.
var settings = []setting{
	{"log-level", "log level: debug, info, warn or error", str(func(c *Config) *string { return &c.Log.Level })},
	{"log-format", "log format: json or console", str(func(c *Config) *string { return &c.Log.Format })},
	{"admin-addr", "admin server address (/live, /ready, /metrics)", str(func(c *Config) *string { return &c.Admin.Addr })},
	{"inbound-addr", "inbound proxy address, receiving mesh traffic", str(func(c *Config) *string { return &c.Inbound.Addr })},
	{"outbound-addr", "outbound proxy address, receiving the app's traffic", str(func(c *Config) *string { return &c.Outbound.Addr })},
	{"detect-timeout", "how long protocol detection waits for client bytes", duration(func(c *Config) *time.Duration { return &c.Detect.Timeout })},
	{"opaque-ports", "ports proxied as opaque TCP without detection, e.g. 25,587,4000-4100",
		func(c *Config, v string) error { return c.OpaquePorts.UnmarshalText([]byte(v)) }},
	{"shutdown-grace", "how long connections may drain after SIGTERM", duration(func(c *Config) *time.Duration { return &c.ShutdownGrace })},
}
