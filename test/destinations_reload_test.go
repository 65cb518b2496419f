package test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// Changing the destination table in the config file takes effect for new
// connections without a restart, while an established connection keeps
// flowing; a broken file keeps the last good table.
func TestDestinationTableReloadsWithoutDroppingConnections(t *testing.T) {
	m := meshtest.NewMesh(t)
	appPort := echoApp(t)
	server := m.Start(t, "server", meshtest.Config())
	inPort := meshtest.Port(server.Addrs.Inbound)

	path := filepath.Join(t.TempDir(), "meshproxy.yaml")
	writeDestinations := func(expectID string) {
		t.Helper()
		data := fmt.Sprintf("destinations:\n  - {match: %s, address: 127.0.0.1, inboundPort: %d, identity: [%q], opaquePorts: \"%d\"}\n",
			appHost, inPort, expectID, appPort)
		// Replace by rename, as editors and ConfigMap updates do.
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	writeDestinations(meshtest.ID("server").String())
	fileCfg, err := config.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := meshtest.Config()
	cfg.Path, cfg.Destinations = path, fileCfg.Destinations
	cfg.Outbound.Listeners = []config.Listener{{Listen: "127.0.0.1:0", Target: meshtest.Join(appHost, appPort)}}
	client := m.Start(t, "client", cfg)
	listen := client.Addrs.Listeners[0].String()

	established := dialTCP(t, listen)
	echoOnce := func() error {
		_ = established.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := established.Write([]byte("ping")); err != nil {
			return err
		}
		_, err := io.ReadFull(established, make([]byte, 4))
		return err
	}
	if err := echoOnce(); err != nil {
		t.Fatal(err)
	}

	// Now expect an identity the server does not have: new connections are
	// refused by the client proxy, the established one is untouched.
	writeDestinations(meshtest.ID("someone-else").String())
	meshtest.Eventually(t, "the new table to refuse the server's identity", func() bool {
		c := dialTCP(t, listen)
		defer c.Close()
		_, _ = c.Write([]byte("x"))
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _ := c.Read(make([]byte, 1))
		return n == 0 && client.Metric(t, "outbound_connect_errors_total", map[string]string{"reason": "unauthorized"}) > 0
	})
	if err := echoOnce(); err != nil {
		t.Fatalf("established connection broken by the reload: %v", err)
	}

	// A broken file is logged and ignored.
	if err := os.WriteFile(path, []byte("destinations: [this is not: valid"), 0o600); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, "the failed reload to be logged", func() bool {
		return len(client.LogsContaining("config reload failed")) > 0
	})
	writeDestinations(meshtest.ID("server").String())
	meshtest.Eventually(t, "the fixed table to carry connections again", func() bool {
		return echoRoundTrip(listen, 1024) == nil
	})
}
