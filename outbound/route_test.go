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
	tab, err := NewTable(dests, ports.MustParse(config.DefaultOpaquePorts), false, func(ids []string) (*tls.Config, error) {
		built = append(built, ids)
		return &tls.Config{ServerName: "for-" + strings.Join(ids, ",")}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(built) != 5 {
		t.Errorf("built %d TLS configs, want one per meshed destination (5)", len(built))
	}
	tests := []struct {
		target   string
		meshed   bool
		opaque   bool
		dialAddr string
		tlsName  string
	}{
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

func TestRouteRefuseUnmeshed(t *testing.T) {
	tab, err := NewTable(nil, ports.Set{}, true, nil)
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
		if _, err := NewTable([]config.Destination{d}, ports.Set{}, false, ok); err == nil {
			t.Errorf("NewTable accepted %q", d.Match)
		}
	}
	bad := errors.New("bad identity")
	_, err := NewTable([]config.Destination{{Match: "a"}}, ports.Set{}, false, func([]string) (*tls.Config, error) { return nil, bad })
	if !errors.Is(err, bad) {
		t.Errorf("err = %v, want the TLS builder's error", err)
	}
}

func TestRouterSwap(t *testing.T) {
	noTLS := func([]string) (*tls.Config, error) { return &tls.Config{}, nil }
	a, _ := NewTable(nil, ports.Set{}, false, noTLS)
	b, _ := NewTable([]config.Destination{{Match: "svc"}}, ports.Set{}, false, noTLS)
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
	tab, _ := NewTable([]config.Destination{{Match: "10.0.0.0/8"}, {Match: "redis.demo"}}, ports.MustParse(config.DefaultOpaquePorts), false,
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
