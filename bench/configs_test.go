package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/seed722d2a70/meshproxy/config"
)

var testCerts = CertFiles{Cert: "/c/svid.pem", Key: "/c/key.pem", Bundle: "/c/bundle.pem", Combined: "/c/combined.pem", ID: "spiffe://bench.local/server"}

func testTunnels() (client, server []Tunnel) {
	return []Tunnel{{Name: "sink", Listen: "127.0.0.1:1001", Connect: "127.0.0.1:2001"}, {Name: "echo", Listen: "127.0.0.1:1002", Connect: "127.0.0.1:2002"}},
		[]Tunnel{{Name: "sink", Listen: "127.0.0.1:2001", Connect: "127.0.0.1:3001"}, {Name: "echo", Listen: "127.0.0.1:2002", Connect: "127.0.0.1:3002"}}
}

// sections splits an ini-style or haproxy configuration at lines that
// start a section.
func sections(conf string, starts func(line string) bool) []string {
	var out []string
	for line := range strings.SplitSeq(conf, "\n") {
		if starts(line) {
			out = append(out, "")
		}
		if len(out) > 0 {
			out[len(out)-1] += line + "\n"
		}
	}
	return out
}

func TestStunnelConfig(t *testing.T) {
	client, server := testTunnels()
	for _, tt := range []struct {
		side     string
		tunnels  []Tunnel
		isClient bool
	}{{"client", client, true}, {"server", server, false}} {
		t.Run(tt.side, func(t *testing.T) {
			conf := stunnelConfig(tt.tunnels, testCerts, tt.isClient)
			for _, global := range []string{"foreground = yes\n", "pid =\n", "debug = 4\n"} {
				if !strings.Contains(conf, global) {
					t.Errorf("no %q in\n%s", global, conf)
				}
			}
			secs := sections(conf, func(l string) bool { return strings.HasPrefix(l, "[") })
			if len(secs) != len(tt.tunnels) {
				t.Fatalf("%d services, want %d:\n%s", len(secs), len(tt.tunnels), conf)
			}
			for i, sec := range secs {
				tn := tt.tunnels[i]
				for _, want := range []string{
					"[" + tn.Name + "]", "accept = " + tn.Listen + "\n", "connect = " + tn.Connect + "\n",
					"cert = /c/svid.pem\n", "key = /c/key.pem\n", "CAfile = /c/bundle.pem\n", "verifyChain = yes\n",
					"sslVersionMin = TLSv1.3\n", "ciphersuites = TLS_AES_128_GCM_SHA256\n",
				} {
					if !strings.Contains(sec, want) {
						t.Errorf("service %s lacks %q:\n%s", tn.Name, want, sec)
					}
				}
				if got := strings.Contains(sec, "client = yes"); got != tt.isClient {
					t.Errorf("service %s: client = yes present %v, want %v", tn.Name, got, tt.isClient)
				}
				if got := strings.Contains(sec, "requireCert = yes"); got == tt.isClient {
					t.Errorf("service %s: requireCert present %v on the %s side", tn.Name, got, tt.side)
				}
			}
		})
	}
}

func TestHAProxyConfig(t *testing.T) {
	client, server := testTunnels()
	tls := "ssl crt /c/combined.pem ca-file /c/bundle.pem verify required"
	for _, tt := range []struct {
		side     string
		tunnels  []Tunnel
		isClient bool
	}{{"client", client, true}, {"server", server, false}} {
		t.Run(tt.side, func(t *testing.T) {
			conf := haproxyConfig(tt.tunnels, testCerts, tt.isClient, 9000)
			for _, global := range []string{
				"    maxconn 9000\n", "ssl-default-bind-options ssl-min-ver TLSv1.3", "ssl-default-server-options ssl-min-ver TLSv1.3",
				"ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256", "ssl-default-server-ciphersuites TLS_AES_128_GCM_SHA256", "mode tcp",
			} {
				if !strings.Contains(conf, global) {
					t.Errorf("no %q in\n%s", global, conf)
				}
			}
			if strings.Count(conf, "maxconn 9000") != 2 {
				t.Errorf("maxconn must be set globally and as the frontends' default:\n%s", conf)
			}
			secs := sections(conf, func(l string) bool { return strings.HasPrefix(l, "listen ") })
			if len(secs) != len(tt.tunnels) {
				t.Fatalf("%d listen sections, want %d:\n%s", len(secs), len(tt.tunnels), conf)
			}
			for i, sec := range secs {
				tn := tt.tunnels[i]
				var bind, srv string
				if tt.isClient {
					bind, srv = "bind "+tn.Listen+"\n", "server peer "+tn.Connect+" "+tls+"\n"
				} else {
					bind, srv = "bind "+tn.Listen+" "+tls+"\n", "server app "+tn.Connect+"\n"
				}
				if !strings.Contains(sec, "listen "+tn.Name+"\n") || !strings.Contains(sec, bind) || !strings.Contains(sec, srv) {
					t.Errorf("section %d wants %q and %q:\n%s", i, bind, srv, sec)
				}
			}
		})
	}
}

// The generated configurations must be accepted by the real programs. The
// peers are installed by `make bench`, not `make test`, so this skips
// without them.
func TestPeerConfigsAreValid(t *testing.T) {
	dir := t.TempDir()
	_, certs, err := NewCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	client, server := testTunnels()
	t.Run("haproxy", func(t *testing.T) {
		if _, err := exec.LookPath("haproxy"); err != nil {
			t.Skip("haproxy not installed (scripts/bench-deps.sh installs it)")
		}
		for i, conf := range []string{haproxyConfig(client, certs.Client, true, 1000), haproxyConfig(server, certs.Server, false, 1000)} {
			path := filepath.Join(dir, "haproxy.cfg")
			if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("haproxy", "-c", "-f", path).CombinedOutput(); err != nil {
				t.Errorf("config %d: haproxy -c: %v\n%s\n%s", i, err, out, conf)
			}
		}
	})
	t.Run("stunnel", func(t *testing.T) {
		if _, err := exec.LookPath(stunnelBinary); err != nil {
			t.Skip("stunnel4 not installed (scripts/bench-deps.sh installs it)")
		}
		// stunnel has no check mode; a bad option fails at start, before
		// it binds, and a good configuration keeps it running.
		addrs, err := freeAddrs(1)
		if err != nil {
			t.Fatal(err)
		}
		conf := stunnelConfig([]Tunnel{{Name: "x", Listen: addrs[0], Connect: "127.0.0.1:1"}}, certs.Server, false)
		path := filepath.Join(dir, "stunnel.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := startProcess(dir, "stunnel", stunnelBinary, path)
		if err != nil {
			t.Fatal(err)
		}
		defer p.stop()
		if err := p.waitReady(t.Context(), listening(addrs[0])); err != nil {
			t.Errorf("stunnel rejected its configuration: %v\n%s", err, conf)
		}
	})
}

func TestMeshproxyClientConfigLoads(t *testing.T) {
	fronts := Endpoints{Sink: "127.0.0.1:1001", Echo: "127.0.0.1:1002", HTTP: "127.0.0.1:1003", GRPC: "127.0.0.1:1004"}
	backends := Endpoints{Sink: "127.0.0.1:3001", Echo: "127.0.0.1:3002", HTTP: "127.0.0.1:3003", GRPC: "127.0.0.1:3004"}
	conf, err := meshproxyClientConfig(fronts, backends, "2143", "spiffe://bench.local/server")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "client.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.LoadFile(path)
	if err != nil {
		t.Fatalf("meshproxy rejects the configuration: %v\n%s", err, conf)
	}
	if len(c.Outbound.Listeners) != 4 {
		t.Fatalf("%d listeners, want 4", len(c.Outbound.Listeners))
	}
	for i, l := range c.Outbound.Listeners {
		f, b := fronts.services()[i], backends.services()[i]
		if l.Listen != f.addr || l.Target != meshHost+b.addr[len("127.0.0.1"):] {
			t.Errorf("listener %d = %+v, want %s → %s", i, l, f.addr, b.addr)
		}
	}
	if len(c.Destinations) != 1 {
		t.Fatalf("%d destinations, want 1", len(c.Destinations))
	}
	d := c.Destinations[0]
	if d.Match != meshHost || d.Address != "127.0.0.1" || d.InboundPort != 2143 || len(d.Identity) != 1 || d.Identity[0] != "spiffe://bench.local/server" {
		t.Errorf("destination %+v", d)
	}
	// The TCP measures' ports are opaque; the HTTP ones are detected.
	for port, opaque := range map[uint16]bool{3001: true, 3002: true, 3003: false, 3004: false} {
		if d.OpaquePorts == nil || d.OpaquePorts.Contains(port) != opaque {
			t.Errorf("port %d opaque = %v, want %v", port, !opaque, opaque)
		}
	}
}

func TestMeshproxyClientConfigRejectsBadBackend(t *testing.T) {
	if _, err := meshproxyClientConfig(Endpoints{}, Endpoints{Sink: "no port"}, "1", "x"); err == nil {
		t.Error("no error for a backend address without a port")
	}
}
