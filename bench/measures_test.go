package bench

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"
)

// startApps runs the backend apps in this process until the test ends.
func startApps(t *testing.T) Endpoints {
	t.Helper()
	addrs, err := freeAddrs(4)
	if err != nil {
		t.Fatal(err)
	}
	e := Endpoints{Sink: addrs[0], Echo: addrs[1], HTTP: addrs[2], GRPC: addrs[3]}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := ServeApps(ctx, e); err != nil {
			t.Error(err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	if err := waitFor(t, listening(addrs...)); err != nil {
		t.Fatal(err)
	}
	return e
}

// startGoTLSPair runs both sides of go-tls in this process in front of
// backends, and returns the front.
func startGoTLSPair(t *testing.T, certs PairCerts, backends Endpoints) Endpoints {
	t.Helper()
	client, server, front, err := pairTunnels(backends)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, o := range []GoTLSOptions{
		{Client: false, Routes: server, Cert: certs.Server.Cert, Key: certs.Server.Key, Bundle: certs.Server.Bundle},
		{Client: true, Routes: client, Cert: certs.Client.Cert, Key: certs.Client.Key, Bundle: certs.Client.Bundle},
	} {
		wg.Go(func() {
			if err := RunGoTLS(ctx, o); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	if err := waitFor(t, listening(append(listenAddrs(client), listenAddrs(server)...)...)); err != nil {
		t.Fatal(err)
	}
	return front
}

func waitFor(t *testing.T, ready func() bool) error {
	ctx, cancel := context.WithTimeout(t.Context(), startTimeout)
	defer cancel()
	for !ready() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// Every measure runs against the apps directly and through the go-tls pair
// and returns the values its table expects. The values are not checked
// against times: only that the traffic went through whole.
func TestMeasuresThroughDirectAndGoTLS(t *testing.T) {
	_, certs, err := NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	backends := startApps(t)
	for _, inst := range []*Instance{
		{Name: ContenderDirect, Front: backends},
		{Name: ContenderGoTLS, Front: startGoTLSPair(t, certs, backends)},
	} {
		t.Run(inst.Name, func(t *testing.T) {
			ctx := t.Context()
			const d = 100 * time.Millisecond
			for _, tt := range []struct {
				name string
				run  func() (map[string]float64, error)
				keys []string
			}{
				{"bulk-1", func() (map[string]float64, error) { return measureBulk(ctx, inst, 1, 3<<20+7) }, []string{"mbps"}},
				{"bulk-4", func() (map[string]float64, error) { return measureBulk(ctx, inst, 4, 4<<20) }, []string{"mbps"}},
				{"ping-pong", func() (map[string]float64, error) { return measurePingPong(ctx, inst, 4, d) }, []string{"ops", "p50_us", "p99_us"}},
				{"http", func() (map[string]float64, error) { return measureHTTP(ctx, inst, 200, 4, d) }, []string{"p50_us", "p99_us", "p999_us", "achieved"}},
				{"grpc", func() (map[string]float64, error) { return measureGRPC(ctx, inst, 4, d) }, []string{"rps", "p50_us", "p99_us"}},
				{"new-conns", func() (map[string]float64, error) { return measureConnRate(ctx, inst, 2, d) }, []string{"conns", "p99_us"}},
			} {
				values, err := tt.run()
				if err != nil {
					t.Errorf("%s: %v", tt.name, err)
					continue
				}
				for _, k := range tt.keys {
					if v, ok := values[k]; !ok || !(v > 0) {
						t.Errorf("%s: %s = %v (present %v), want a positive value", tt.name, k, v, ok)
					}
				}
				if _, ok := values["cpu_per_gib"]; ok {
					t.Errorf("%s: CPU reported for an instance without processes", tt.name)
				}
			}
		})
	}
}

// A sink that counts fewer bytes than were sent must fail the bulk
// measure: the count is what proves the bytes arrived.
func TestBulkDetectsShortCount(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 1024)
		for {
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
		_, _ = c.Write([]byte{0, 0, 0, 0, 0, 0, 0, 1}) // claims 1 byte
	})
	if err := sendBulk(t.Context(), l.Addr().String(), 4096); err == nil {
		t.Error("no error for a sink that counted 1 of 4096 bytes")
	}
}

// The go-tls server side must refuse a client whose certificate does not
// chain to the run's CA, and accept one that does.
func TestGoTLSRequiresTheRunCA(t *testing.T) {
	_, certs, err := NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, foreign, err := NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	backends := startApps(t)
	_, server, _, err := pairTunnels(backends)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = RunGoTLS(ctx, GoTLSOptions{Routes: server, Cert: certs.Server.Cert, Key: certs.Server.Key, Bundle: certs.Server.Bundle})
	})
	defer func() { cancel(); wg.Wait() }()
	echoAddr := server[1].Listen // the echo route
	if err := waitFor(t, listening(echoAddr)); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		certs CertFiles
		ok    bool
	}{{"same CA", certs.Client, true}, {"foreign CA", foreign.Client, false}} {
		cfg, err := goTLSConfig(GoTLSOptions{Client: true, Cert: tt.certs.Cert, Key: tt.certs.Key, Bundle: certs.Client.Bundle})
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.Dial("tcp", echoAddr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		// TLS 1.3 clients finish before the server has checked them: the
		// refusal shows on the first exchange.
		err = roundTrip(c, []byte("ping"), make([]byte, 4))
		c.Close()
		if (err == nil) != tt.ok {
			t.Errorf("%s: round trip err = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}
