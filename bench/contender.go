package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// The contenders, by name.
const (
	ContenderDirect    = "direct"
	ContenderGoTLS     = "go-tls"
	ContenderStunnel   = "stunnel"
	ContenderHAProxy   = "haproxy"
	ContenderMeshproxy = "meshproxy"
	// ContenderMeshproxyNetHTTP2 is meshproxy with --http2-relay=false
	// (HTTP/2 on net/http's server and transport), in the gRPC measure
	// only: the flag touches nothing else.
	ContenderMeshproxyNetHTTP2 = "meshproxy-nethttp2"
)

// AllContenders lists every contender in the order tables show them.
func AllContenders() []string {
	return []string{ContenderDirect, ContenderGoTLS, ContenderStunnel, ContenderHAProxy, ContenderMeshproxy, ContenderMeshproxyNetHTTP2}
}

// Endpoints are the four services a measure talks to. The apps listen on
// them directly; a contender's Instance offers its own front addresses
// that lead to them.
type Endpoints struct {
	Sink string `json:"sink"` // reads to EOF, answers the byte count
	Echo string `json:"echo"` // echoes bytes
	HTTP string `json:"http"` // HTTP/1.1 server
	GRPC string `json:"grpc"` // gRPC unary echo
}

// services lists the endpoints in a fixed order with names, for the
// tunnel configurations that need one section per port.
func (e Endpoints) services() []service {
	return []service{{"sink", e.Sink}, {"echo", e.Echo}, {"http", e.HTTP}, {"grpc", e.GRPC}}
}

type service struct{ name, addr string }

// Instance is a running contender: where to connect, and the proxy
// processes to watch.
type Instance struct {
	Name  string
	Front Endpoints
	procs []*process
}

// PIDs are the proxy processes (both sides); none for direct.
func (i *Instance) PIDs() []int {
	pids := make([]int, len(i.procs))
	for n, p := range i.procs {
		pids[n] = p.pid()
	}
	return pids
}

// Stop ends the instance's processes; safe to call more than once.
func (i *Instance) Stop() {
	for _, p := range i.procs {
		p.stop()
	}
}

// alive returns an error when a proxy process has exited.
func (i *Instance) alive() error {
	for _, p := range i.procs {
		if err, gone := p.exited(); gone {
			return fmt.Errorf("%s %s: %v: %s", i.Name, p.name, err, p.logTail())
		}
	}
	return nil
}

// Env is what contenders are started with.
type Env struct {
	Dir       string // scratch directory for configurations and logs
	Certs     PairCerts
	CADir     string // the dev CA, for meshproxy
	Meshproxy string // meshproxy binary
	Self      string // this program, run as `Self gotls ...` for go-tls
	Backends  Endpoints
	// MaxConns is how many proxied connections the open-file limit
	// allows a proxy that holds two sockets for each.
	MaxConns int
}

// startContender starts one instance of the named contender in a fresh
// subdirectory of env.Dir.
func startContender(ctx context.Context, env Env, name string, seq int) (*Instance, error) {
	dir := filepath.Join(env.Dir, fmt.Sprintf("%s-%d", name, seq))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var (
		inst *Instance
		err  error
	)
	switch name {
	case ContenderDirect:
		return &Instance{Name: name, Front: env.Backends}, nil
	case ContenderGoTLS:
		inst, err = startGoTLS(ctx, env, dir)
	case ContenderStunnel:
		inst, err = startStunnel(ctx, env, dir)
	case ContenderHAProxy:
		inst, err = startHAProxy(ctx, env, dir)
	case ContenderMeshproxy:
		inst, err = startMeshproxy(ctx, env, dir, name)
	case ContenderMeshproxyNetHTTP2:
		inst, err = startMeshproxy(ctx, env, dir, name, "--http2-relay=false")
	default:
		return nil, fmt.Errorf("unknown contender %q", name)
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return inst, nil
}

// startPair starts the server side, then the client side, of a two-process
// contender and waits until both listen on addrs.
func startPair(ctx context.Context, name string, server, client []string, serverAddrs, clientAddrs []string, dir string) (*Instance, error) {
	inst := &Instance{Name: name}
	for _, side := range []struct {
		name  string
		argv  []string
		addrs []string
	}{{"server", server, serverAddrs}, {"client", client, clientAddrs}} {
		p, err := startProcess(dir, name+"-"+side.name, side.argv...)
		if err != nil {
			inst.Stop()
			return nil, err
		}
		inst.procs = append(inst.procs, p)
		if err := p.waitReady(ctx, listening(side.addrs...)); err != nil {
			inst.Stop()
			return nil, err
		}
	}
	return inst, nil
}

// Tunnel is one listener of a tunnel process and where it forwards.
type Tunnel struct {
	Name    string
	Listen  string
	Connect string
}

// pairTunnels lays out a two-process tunnel for backends: client-side
// listeners (the front) forward to server-side listeners, which forward to
// the backends. It takes 8 free ports.
func pairTunnels(backends Endpoints) (client, server []Tunnel, front Endpoints, err error) {
	addrs, err := freeAddrs(8)
	if err != nil {
		return nil, nil, Endpoints{}, err
	}
	svcs := backends.services()
	fronts := make([]string, len(svcs))
	for i, s := range svcs {
		fronts[i] = addrs[i]
		serverAddr := addrs[len(svcs)+i]
		client = append(client, Tunnel{Name: s.name, Listen: fronts[i], Connect: serverAddr})
		server = append(server, Tunnel{Name: s.name, Listen: serverAddr, Connect: s.addr})
	}
	front = Endpoints{Sink: fronts[0], Echo: fronts[1], HTTP: fronts[2], GRPC: fronts[3]}
	return client, server, front, nil
}

func listenAddrs(ts []Tunnel) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Listen
	}
	return out
}
