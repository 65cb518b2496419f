package netinit

import (
	"bytes"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/seed722d2a70/meshproxy/ports"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// The restore input for each configuration is what a reviewer reads in a
// dry run; golden files make every change to it visible in review.
func TestScriptGolden(t *testing.T) {
	full := DefaultConfig()
	full.SkipInboundPorts = ports.MustParse("22,8000-8100")
	full.SkipOutboundPorts = ports.MustParse("25,443,3306,5432,6000-6010")
	full.SkipOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("fd00::/8")}

	many := DefaultConfig()
	many.ProxyUID = 1337
	many.InboundPort, many.OutboundPort, many.AdminPort = 15006, 15001, 15020
	// 20 single ports: more than one multiport match holds.
	many.SkipOutboundPorts = ports.MustParse("1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31,33,35,37,39")
	// Ranges count as two ports each in a multiport match.
	many.SkipInboundPorts = ports.MustParse("100-101,200-201,300-301,400-401,500-501,600-601,700-701,800-801")

	for _, tc := range []struct {
		name string
		cfg  Config
		f    Family
	}{
		{"default-ipv4", DefaultConfig(), IPv4},
		{"default-ipv6", DefaultConfig(), IPv6},
		{"skips-ipv4", full, IPv4},
		{"skips-ipv6", full, IPv6},
		{"many-ports-ipv4", many, IPv4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Script(tc.cfg, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", tc.name+".golden"), got)
		})
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./netinit -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run go test ./netinit -update if the change is meant):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

// Every multiport match stays within the kernel's 15-port limit, ranges
// counting two, and together the matches cover exactly the skipped ports.
func TestMultiportLimit(t *testing.T) {
	var set ports.Set
	for p := uint16(1000); p < 1100; p += 3 {
		set.Add(p)
		if p%2 == 0 {
			set.Add(p + 1)
		}
	}
	var b strings.Builder
	writePortReturns(&b, OutboundChain, set)
	var covered ports.Set
	for line := range strings.SplitSeq(strings.TrimSpace(b.String()), "\n") {
		_, list, ok := strings.Cut(line, "--dports ")
		if !ok {
			t.Fatalf("not a multiport rule: %q", line)
		}
		list, _, _ = strings.Cut(list, " ")
		cost := 0
		for item := range strings.SplitSeq(list, ",") {
			cost++
			if strings.Contains(item, ":") {
				cost++
			}
			part, err := ports.Parse(strings.ReplaceAll(item, ":", "-"))
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range part.Ranges() {
				for p := int(r[0]); p <= int(r[1]); p++ {
					covered.Add(uint16(p))
				}
			}
		}
		if cost > maxMultiport {
			t.Errorf("rule %q has %d ports, more than %d", line, cost, maxMultiport)
		}
	}
	if covered.String() != set.String() {
		t.Errorf("rules cover %s, want %s", covered, set)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"uid 0", func(c *Config) { c.ProxyUID = 0 }, "UID 0"},
		{"inbound port 0", func(c *Config) { c.InboundPort = 0 }, "inbound port 0"},
		{"outbound port 0", func(c *Config) { c.OutboundPort = 0 }, "outbound port 0"},
		{"admin port 0", func(c *Config) { c.AdminPort = 0 }, "admin port 0"},
		{"same ports", func(c *Config) { c.OutboundPort = c.InboundPort }, "must differ"},
		{"admin port on the inbound port", func(c *Config) { c.AdminPort = c.InboundPort }, "must differ"},
		{"admin port on the outbound port", func(c *Config) { c.AdminPort = c.OutboundPort }, "must differ"},
		{"zero CIDR", func(c *Config) { c.SkipOutboundCIDRs = []netip.Prefix{{}} }, "CIDR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.change(&c)
			err := c.Validate()
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig mentioning %q", err, tc.want)
			}
			if _, err := Script(c, IPv4); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("Script accepted an invalid config: %v", err)
			}
		})
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
	if _, err := Script(DefaultConfig(), Family(7)); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Script with an unknown family: %v", err)
	}
}

func TestParsePort(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint16
		ok   bool
	}{
		{"4143", 4143, true},
		{" 1 ", 1, true},
		{"65535", 65535, true},
		{"0", 0, false},
		{"65536", 0, false},
		{"-1", 0, false},
		{"http", 0, false},
		{"", 0, false},
	} {
		got, err := ParsePort(tc.in)
		if tc.ok != (err == nil) || got != tc.want {
			t.Errorf("ParsePort(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ParsePort(%q) error %v is not ErrInvalidConfig", tc.in, err)
		}
	}
}

func TestParseUID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint32
		ok   bool
	}{
		{"2102", 2102, true},
		{"0", 0, true}, // parsed; Validate refuses it
		{"root", 0, true},
		{"4294967295", 0, false},
		{"4294967296", 0, false},
		{"12ab", 0, false},
		{"", 0, false},
		{"no-such-user-meshproxy", 0, false},
	} {
		got, err := ParseUID(tc.in)
		if tc.ok != (err == nil) || got != tc.want {
			t.Errorf("ParseUID(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ParseUID(%q) error %v is not ErrInvalidConfig", tc.in, err)
		}
	}
}

func TestParseCIDRs(t *testing.T) {
	got, err := ParseCIDRs(" 10.1.2.3/8, 192.168.1.1 ,fd00::1/8,,::1")
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, p := range got {
		s = append(s, p.String())
	}
	if want := "10.0.0.0/8 192.168.1.1/32 fd00::/8 ::1/128"; strings.Join(s, " ") != want {
		t.Errorf("ParseCIDRs = %v, want %s", s, want)
	}
	for _, bad := range []string{"10.0.0.0/33", "10.0.0", "fe80::1%eth0", "example.com"} {
		if _, err := ParseCIDRs(bad); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ParseCIDRs(%q) = %v, want ErrInvalidConfig", bad, err)
		}
	}
}
