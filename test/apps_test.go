package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/ports"
	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// appHost is the name client apps use for the server app; the client
// proxy's destination table maps it to the server proxy.
const appHost = "app.mesh.test"

// pair is a client proxy and a server proxy in one mesh, with an explicit
// outbound listener on the client side for the server app's port.
type pair struct {
	mesh   *meshtest.Mesh
	client *meshtest.Proxy
	server *meshtest.Proxy
	// listen is where the client app connects.
	listen string
}

// pairOptions adjust a pair before it starts.
type pairOptions struct {
	serverName string                 // default "server"
	clientName string                 // default "client"
	opaque     bool                   // mark the app port opaque on the destination
	identity   []string               // destination identity (default: trust domain)
	serverCfg  func(c *config.Config) // extra server settings
	clientCfg  func(c *config.Config) // extra client settings
	netHTTP2   bool                   // both proxies carry HTTP/2 with net/http, not the frame relay
}

func startPair(t testing.TB, appPort uint16, o pairOptions) *pair {
	t.Helper()
	if o.serverName == "" {
		o.serverName = "server"
	}
	if o.clientName == "" {
		o.clientName = "client"
	}
	m := meshtest.NewMesh(t)
	scfg := meshtest.Config()
	scfg.HTTP2Relay = !o.netHTTP2
	if o.serverCfg != nil {
		o.serverCfg(&scfg)
	}
	server := m.Start(t, o.serverName, scfg)

	ccfg := meshtest.Config()
	ccfg.HTTP2Relay = !o.netHTTP2
	dest := config.Destination{
		Match:       appHost,
		Address:     "127.0.0.1",
		InboundPort: meshtest.Port(server.Addrs.Inbound),
		Identity:    o.identity,
	}
	if o.opaque {
		set := ports.Set{}
		set.Add(appPort)
		dest.OpaquePorts = &set
	}
	ccfg.Destinations = []config.Destination{dest}
	ccfg.Outbound.Listeners = []config.Listener{{Listen: "127.0.0.1:0", Target: meshtest.Join(appHost, appPort)}}
	if o.clientCfg != nil {
		o.clientCfg(&ccfg)
	}
	client := m.Start(t, o.clientName, ccfg)
	return &pair{mesh: m, client: client, server: server, listen: client.Addrs.Listeners[0].String()}
}

// echoApp is a TCP server that echoes every connection until the client
// half-closes, then half-closes its side.
func echoApp(t testing.TB) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
				// Wait for the client to close, so the close is the client's.
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return meshtest.Port(ln.Addr())
}

// redisApp starts a real redis-server on a free loopback port.
func redisApp(t testing.TB) uint16 {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not installed (make test installs it via scripts/deps.sh): %v", err)
	}
	port := freePort(t)
	dir := t.TempDir()
	cmd := exec.Command(bin, "--port", strconv.Itoa(int(port)), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := meshtest.Join("127.0.0.1", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			reply, err := redisDo(c, "PING")
			c.Close()
			if err == nil && reply == "PONG" {
				return port
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			t.Fatalf("redis-server did not come up on %s: %v\n%s", addr, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// redisDo sends one command in RESP and returns a simple or bulk string
// reply.
func redisDo(c net.Conn, args ...string) (string, error) {
	w := bufio.NewWriter(c)
	fmt.Fprintf(w, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(w, "$%d\r\n%s\r\n", len(a), a)
	}
	if err := w.Flush(); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if len(line) < 3 {
		return "", fmt.Errorf("short reply %q", line)
	}
	switch line[0] {
	case '+':
		return line[1 : len(line)-2], nil
	case '$':
		n, err := strconv.Atoi(line[1 : len(line)-2])
		if err != nil || n < 0 {
			return "", fmt.Errorf("bad bulk reply %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("reply %q", line)
}

func freePort(t testing.TB) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return meshtest.Port(ln.Addr())
}

func dialTimeout(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, time.Second) }
