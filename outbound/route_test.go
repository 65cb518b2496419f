package outbound

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/ports"
)

func TestRoute(t *testing.T) {
	unmeshed := false
	redisOnly := ports.MustParse("6379")
	dests := []config.Destination{
		{Match: "redis.demo", Identity: []string{"spiffe://mesh.local/redis"}, Address: "127.0.0.1", InboundPort: 24143},
		{Match: "10.0.0.0/8"},
		{Match: "10.1.0.0/16", Identity: []string{"spiffe://mesh.local/ten-one"}},
		{Match: "10.1.2.3:4222", Meshed: &unmeshed},
		{Match: "[fd00::1]:80", OpaquePorts: &redisOnly},
		{Match: "NATS.Demo."},
	}
	var built [][]string
	tab, err := NewTable(dests, nil, ports.MustParse(config.DefaultOpaquePorts), false, func(ids []string) (*tls.Config, error) {
		built = append(built, ids)
		return &tls.Config{ServerName: "for-" + strings.Join(ids, ",")}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(built) != 5 {
		t.Errorf("built %d TLS configs, want one per meshed destination (5)", len(built))
	}
	tests := []routeCase{
		{"redis.demo:6379", true, true, "127.0.0.1:24143", "for-spiffe://mesh.local/redis"},
		{"REDIS.demo.:8080", true, false, "127.0.0.1:24143", "for-spiffe://mesh.local/redis"},
		{"10.9.9.9:3306", true, true, "10.9.9.9:4143", "for-"},
		{"10.1.9.9:80", true, false, "10.1.9.9:4143", "for-spiffe://mesh.local/ten-one"},
		{"10.1.2.3:4222", false, false, "10.1.2.3:4222", ""},
		{"10.1.2.3:4223", true, false, "10.1.2.3:4143", "for-spiffe://mesh.local/ten-one"},
		{"[fd00::1]:80", true, false, "[fd00::1]:4143", "for-"},
		{"nats.demo:4222", true, false, "nats.demo:4143", "for-"},
		{"192.168.1.1:6379", false, true, "192.168.1.1:6379", ""},
		{"example.com:443", false, false, "example.com:443", ""},
	}
	checkRoutes(t, tab, tests)
}

func TestRouteRefuseUnmeshed(t *testing.T) {
	tab, err := NewTable(nil, nil, ports.Set{}, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tab.Route(Target{Host: "10.0.0.1", Port: 80}); !errors.Is(err, ErrUnmeshedRefused) {
		t.Fatalf("err = %v, want ErrUnmeshedRefused", err)
	}
}

func TestNewTableErrors(t *testing.T) {
	ok := func([]string) (*tls.Config, error) { return &tls.Config{}, nil }
	for _, d := range []config.Destination{{Match: "10.0.0.0/33"}, {Match: "host:0"}, {Match: "host:http"}} {
		if _, err := NewTable([]config.Destination{d}, nil, ports.Set{}, false, ok); err == nil {
			t.Errorf("NewTable accepted %q", d.Match)
		}
	}
	bad := errors.New("bad identity")
	_, err := NewTable([]config.Destination{{Match: "a"}}, nil, ports.Set{}, false, func([]string) (*tls.Config, error) { return nil, bad })
	if !errors.Is(err, bad) {
		t.Errorf("err = %v, want the TLS builder's error", err)
	}
}

func TestRouterSwap(t *testing.T) {
	noTLS := func([]string) (*tls.Config, error) { return &tls.Config{}, nil }
	a, _ := NewTable(nil, nil, ports.Set{}, false, noTLS)
	b, _ := NewTable([]config.Destination{{Match: "svc"}}, nil, ports.Set{}, false, noTLS)
	r := NewRouter(a)
	target := Target{Host: "svc", Port: 80}
	if got, _ := r.Route(target); got.Meshed {
		t.Fatal("meshed before swap")
	}
	r.Swap(b)
	if got, _ := r.Route(target); !got.Meshed {
		t.Fatal("not meshed after swap")
	}
}

func BenchmarkRoute(b *testing.B) {
	tab, _ := NewTable([]config.Destination{{Match: "10.0.0.0/8"}, {Match: "redis.demo"}}, nil, ports.MustParse(config.DefaultOpaquePorts), false,
		func([]string) (*tls.Config, error) { return &tls.Config{}, nil })
	r := NewRouter(tab)
	target := Target{Host: "10.2.3.4", Port: 6379}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Route(target); err != nil {
			b.Fatal(err)
		}
	}
}

// Meshed networks mesh every address they contain that no destination
// entry matches, with the own trust domain's identity on 4143; any entry,
// even a shorter prefix, overrides them.
func TestRouteMeshedNetworks(t *testing.T) {
	unmeshed := false
	nats := ports.MustParse("4222")
	dests := []config.Destination{
		{Match: "10.1.2.3", Meshed: &unmeshed},       // a host outside the mesh
		{Match: "10.2.0.0/16", Meshed: &unmeshed},    // a node network
		{Match: "[fd00::9]:5432", Meshed: &unmeshed}, // one port of a host
		{Match: "192.0.0.0/2", Identity: []string{"spiffe://other/db"}, OpaquePorts: &nats},
		{Match: "fd00::7", InboundPort: 24143},
	}
	var built [][]string
	tab, err := NewTable(dests, []string{"10.0.0.0/8", "192.168.0.0/16", "fd00::/8", "172.16.9.9/12"},
		ports.MustParse(config.DefaultOpaquePorts), false, func(ids []string) (*tls.Config, error) {
			built = append(built, ids)
			return &tls.Config{ServerName: "for-" + strings.Join(ids, ",")}, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if len(built) != 3 || built[2] != nil {
		t.Errorf("built TLS configs for %q, want the two meshed entries' and one for all meshed networks (own trust domain)", built)
	}
	tests := []routeCase{
		{"10.9.9.9:6379", true, true, "10.9.9.9:4143", "for-"},
		{"10.9.9.9:8080", true, false, "10.9.9.9:4143", "for-"},
		{"10.1.2.3:8080", false, false, "10.1.2.3:8080", ""},
		{"10.1.2.4:8080", true, false, "10.1.2.4:4143", "for-"},
		{"10.2.3.4:6379", false, true, "10.2.3.4:6379", ""},
		{"172.31.255.1:80", true, false, "172.31.255.1:4143", "for-"},
		{"172.32.0.1:80", false, false, "172.32.0.1:80", ""},
		{"192.168.7.7:4222", true, true, "192.168.7.7:4143", "for-spiffe://other/db"},
		{"[fd00::9]:5432", false, true, "[fd00::9]:5432", ""},
		{"[fd00::9]:80", true, false, "[fd00::9]:4143", "for-"},
		{"[fd00::7]:80", true, false, "[fd00::7]:24143", "for-"},
		{"[fd12:3456::1]:3306", true, true, "[fd12:3456::1]:4143", "for-"},
		{"[::ffff:10.9.9.9]:80", true, false, "[::ffff:10.9.9.9]:4143", "for-"},
		{"[fe80::1]:80", false, false, "[fe80::1]:80", ""},
		{"[2001:db8::1]:80", false, false, "[2001:db8::1]:80", ""},
		{"8.8.8.8:53", false, false, "8.8.8.8:53", ""},
		{"svc.demo:80", false, false, "svc.demo:80", ""},
	}
	checkRoutes(t, tab, tests)
}

// With unmeshed traffic refused, an address in a meshed network is routed
// (meshed) and one outside fails.
func TestRouteMeshedNetworksRefuseUnmeshed(t *testing.T) {
	tab, err := NewTable(nil, []string{"10.0.0.0/8"}, ports.Set{}, true, func([]string) (*tls.Config, error) { return &tls.Config{}, nil })
	if err != nil {
		t.Fatal(err)
	}
	if r, err := tab.Route(Target{Host: "10.0.0.1", Port: 80}); err != nil || !r.Meshed {
		t.Errorf("10.0.0.1: %+v, %v; want meshed", r, err)
	}
	if _, err := tab.Route(Target{Host: "11.0.0.1", Port: 80}); !errors.Is(err, ErrUnmeshedRefused) {
		t.Errorf("11.0.0.1: %v, want ErrUnmeshedRefused", err)
	}
}

func TestNewTableBadMeshedNetwork(t *testing.T) {
	noTLS := func([]string) (*tls.Config, error) { return &tls.Config{}, nil }
	for _, n := range []string{"10.0.0.0", "10.0.0.0/33", "mesh.local/8", "", "fe80::/10%eth0", "::ffff:10.0.0.0/104"} {
		if _, err := NewTable(nil, []string{n}, ports.Set{}, false, noTLS); err == nil || !strings.Contains(err.Error(), "meshed network") {
			t.Errorf("meshed network %q: err = %v, want an error naming it", n, err)
		}
	}
	bad := errors.New("no identity")
	if _, err := NewTable(nil, []string{"10.0.0.0/8"}, ports.Set{}, false, func([]string) (*tls.Config, error) { return nil, bad }); !errors.Is(err, bad) {
		t.Errorf("err = %v, want the TLS builder's error", err)
	}
}

// routeCase is a target and the route the table should give it; tlsName
// is the ServerName of its TLS config, "" for none.
type routeCase struct {
	target   string
	meshed   bool
	opaque   bool
	dialAddr string
	tlsName  string
}

func checkRoutes(t *testing.T, tab *Table, tests []routeCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			target, err := ParseTarget(tt.target)
			if err != nil {
				t.Fatal(err)
			}
			r, err := NewRouter(tab).Route(target)
			if err != nil {
				t.Fatal(err)
			}
			if r.Meshed != tt.meshed || r.Opaque != tt.opaque || r.DialAddr != tt.dialAddr {
				t.Errorf("route = meshed %v opaque %v dial %q, want %v %v %q", r.Meshed, r.Opaque, r.DialAddr, tt.meshed, tt.opaque, tt.dialAddr)
			}
			gotName := ""
			if r.TLS != nil {
				gotName = r.TLS.ServerName
			}
			if gotName != tt.tlsName {
				t.Errorf("TLS config %q, want %q", gotName, tt.tlsName)
			}
		})
	}
}
