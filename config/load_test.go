package config

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "meshproxy.yaml")
	writeFile(t, file, `
log:
  level: debug
admin:
  addr: 127.0.0.1:1
detect:
  timeout: 3s
opaquePorts: "6379, 4000-4001"
`)
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, c Config)
	}{
		{
			name: "defaults",
			check: func(t *testing.T, c Config) {
				if c.Inbound.Addr != "0.0.0.0:4143" || c.Outbound.Addr != "127.0.0.1:4140" || c.Admin.Addr != "0.0.0.0:4191" {
					t.Errorf("default addresses = %q %q %q", c.Inbound.Addr, c.Outbound.Addr, c.Admin.Addr)
				}
				if c.Detect.Timeout != 10*time.Second {
					t.Errorf("default detect timeout = %v", c.Detect.Timeout)
				}
				if got := c.OpaquePorts.String(); got != DefaultOpaquePorts {
					t.Errorf("default opaque ports = %q", got)
				}
				if !c.HTTP2Relay {
					t.Error("the HTTP/2 frame relay is off by default")
				}
			},
		},
		{
			name: "the HTTP/2 relay turned off by flag",
			args: []string{"--http2-relay=false"},
			check: func(t *testing.T, c Config) {
				if c.HTTP2Relay {
					t.Error("--http2-relay=false left the relay on")
				}
			},
		},
		{
			name: "the HTTP/2 relay turned off by env",
			env:  map[string]string{"MESHPROXY_HTTP2_RELAY": "false"},
			check: func(t *testing.T, c Config) {
				if c.HTTP2Relay {
					t.Error("MESHPROXY_HTTP2_RELAY=false left the relay on")
				}
			},
		},
		{
			name: "file overrides defaults",
			args: []string{"-config", file},
			check: func(t *testing.T, c Config) {
				if c.Log.Level != "debug" || c.Admin.Addr != "127.0.0.1:1" || c.Detect.Timeout != 3*time.Second {
					t.Errorf("file values not applied: %+v", c)
				}
				if c.Log.Format != "json" {
					t.Errorf("unset file key changed the default: format %q", c.Log.Format)
				}
				if got := c.OpaquePorts.String(); got != "4000-4001,6379" {
					t.Errorf("opaque ports = %q", got)
				}
			},
		},
		{
			name: "env overrides file, env names the file",
			env:  map[string]string{"MESHPROXY_CONFIG": file, "MESHPROXY_DETECT_TIMEOUT": "2s"},
			check: func(t *testing.T, c Config) {
				if c.Detect.Timeout != 2*time.Second || c.Admin.Addr != "127.0.0.1:1" {
					t.Errorf("got timeout %v admin %q", c.Detect.Timeout, c.Admin.Addr)
				}
			},
		},
		{
			name: "flags override env",
			args: []string{"-config", file, "-detect-timeout", "1s", "--opaque-ports", "25"},
			env:  map[string]string{"MESHPROXY_DETECT_TIMEOUT": "2s"},
			check: func(t *testing.T, c Config) {
				if c.Detect.Timeout != time.Second {
					t.Errorf("timeout = %v, want 1s", c.Detect.Timeout)
				}
				if got := c.OpaquePorts.String(); got != "25" {
					t.Errorf("opaque ports = %q", got)
				}
			},
		},
		{
			name: "bare boolean flags mean true, =false turns them off",
			args: []string{"--transparent", "--refuse-unmeshed", "--inbound-require-identity=false", "--inbound-require-identity-ports", "6379"},
			env:  map[string]string{"MESHPROXY_INBOUND_REQUIRE_IDENTITY": "true"},
			check: func(t *testing.T, c Config) {
				if !c.Transparent || !c.Outbound.RefuseUnmeshed || c.Inbound.RequireIdentity {
					t.Errorf("transparent %v refuse-unmeshed %v require-identity %v", c.Transparent, c.Outbound.RefuseUnmeshed, c.Inbound.RequireIdentity)
				}
				if got := c.Inbound.RequireIdentityPorts.String(); got != "6379" {
					t.Errorf("require-identity ports = %q", got)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load("run", tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	typo := filepath.Join(dir, "typo.yaml")
	writeFile(t, typo, "detect:\n  timeuot: 1s\n")
	tests := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"unknown yaml key", []string{"-config", typo}, nil},
		{"missing file", []string{"-config", filepath.Join(dir, "nope.yaml")}, nil},
		{"bad duration flag", []string{"-detect-timeout", "soon"}, nil},
		{"zero timeout", []string{"-detect-timeout", "0s"}, nil},
		{"bad port env", nil, map[string]string{"MESHPROXY_OPAQUE_PORTS": "70000"}},
		{"bad level", []string{"-log-level", "loud"}, nil},
		{"bad address", []string{"-inbound-addr", "4143"}, nil},
		{"stray argument", []string{"extra"}, nil},
		{"per-source pending cap over the total", []string{"--inbound-max-pending=100", "--inbound-max-pending-per-source=128"}, nil},
		{"per-source unmeshed cap over the total", []string{"--inbound-max-unmeshed-http=10", "--inbound-max-unmeshed-http-per-source=11"}, nil},
		{"negative per-source cap", []string{"--inbound-max-pending-per-source=-1"}, nil},
		{"zero handshake bytes", []string{"--inbound-max-handshake-bytes=0"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load("run", tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			if tt.name != "missing file" && !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v is not ErrInvalid", err)
			}
		})
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Meshed networks are empty by default and come from the file, the
// environment (comma-separated) or the flags, in the usual precedence.
func TestLoadMeshedNetworks(t *testing.T) {
	file := filepath.Join(t.TempDir(), "meshproxy.yaml")
	writeFile(t, file, "meshedNetworks: [10.0.0.0/8, \"fd00::/8\"]\n")
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"default", nil, nil, nil},
		{"file", []string{"-config", file}, nil, []string{"10.0.0.0/8", "fd00::/8"}},
		{"env over file", []string{"-config", file}, map[string]string{"MESHPROXY_MESHED_NETWORKS": "192.168.0.0/16, 100.64.0.0/10"}, []string{"192.168.0.0/16", "100.64.0.0/10"}},
		{"flags over env", []string{"--meshed-networks", "172.16.0.0/12", "--meshed-networks=fd00::/8"},
			map[string]string{"MESHPROXY_MESHED_NETWORKS": "192.168.0.0/16"}, []string{"172.16.0.0/12", "fd00::/8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load("run", tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.MeshedNetworks, tt.want) {
				t.Errorf("meshed networks %q, want %q", c.MeshedNetworks, tt.want)
			}
		})
	}
}

func TestValidateMeshedNetworks(t *testing.T) {
	tests := []struct {
		network string
		ok      bool
	}{
		{"10.0.0.0/8", true},
		{"10.1.2.3/8", true}, // host bits are ignored
		{"fd00::/8", true},
		{"0.0.0.0/0", true},
		{"10.0.0.0", false},
		{"10.0.0.0/33", false},
		{"fd00::/129", false},
		{"cluster.local/8", false},
		{"", false},
		{"fe80::/10%eth0", false},
		{"::ffff:10.0.0.0/104", false},
	}
	for _, tt := range tests {
		t.Run(tt.network, func(t *testing.T) {
			c := Default()
			c.MeshedNetworks = []string{"192.168.0.0/16", tt.network}
			err := c.Validate()
			if tt.ok != (err == nil) {
				t.Fatalf("Validate() = %v, want ok %v", err, tt.ok)
			}
			if err != nil && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "meshed network") || !strings.Contains(err.Error(), "CIDR") && !strings.Contains(err.Error(), "IPv4")) {
				t.Errorf("error %q should be ErrInvalid, name the meshed network and say what is wanted", err)
			}
		})
	}
	if _, err := Load("run", []string{"--meshed-networks", "10.0.0.0/8,pods"}, func(string) string { return "" }, io.Discard); !errors.Is(err, ErrInvalid) {
		t.Errorf("Load with a bad meshed network: %v, want ErrInvalid", err)
	}
}

// An authorization list from the environment replaces the file's rather
// than widening it.
func TestLoadEnvListReplacesFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "meshproxy.yaml")
	writeFile(t, file, "inbound:\n  authorize: [\"spiffe://mesh.local/web\"]\n")
	env := map[string]string{"MESHPROXY_CONFIG": file, "MESHPROXY_INBOUND_AUTHORIZE": "spiffe://mesh.local/api"}
	c, err := Load("run", nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"spiffe://mesh.local/api"}; !slices.Equal(c.Inbound.Authorize, want) {
		t.Errorf("inbound authorize %q, want %q", c.Inbound.Authorize, want)
	}
}

// A per-source cap left unset follows its total down, so that setting only
// the total never fails against the per-source default.
func TestLoadPerSourceCapsFollowTheTotal(t *testing.T) {
	tests := []struct {
		name                      string
		args                      []string
		wantPending, wantUnmeshed int
	}{
		{"defaults", nil, DefaultMaxPendingPerSource, DefaultMaxUnmeshedHTTPPerSource},
		{"only the totals, below the per-source defaults", []string{"--inbound-max-pending=100", "--inbound-max-unmeshed-http=20"}, 100, 20},
		{"only the totals, above", []string{"--inbound-max-pending=5000", "--inbound-max-unmeshed-http=5000"}, DefaultMaxPendingPerSource, DefaultMaxUnmeshedHTTPPerSource},
		{"explicit and fitting", []string{"--inbound-max-pending=100", "--inbound-max-pending-per-source=7"}, 7, DefaultMaxUnmeshedHTTPPerSource},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load("run", tt.args, func(string) string { return "" }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if c.Inbound.MaxPendingPerSource != tt.wantPending || c.Inbound.MaxUnmeshedHTTPPerSource != tt.wantUnmeshed {
				t.Errorf("per-source caps %d and %d, want %d and %d",
					c.Inbound.MaxPendingPerSource, c.Inbound.MaxUnmeshedHTTPPerSource, tt.wantPending, tt.wantUnmeshed)
			}
		})
	}
}
