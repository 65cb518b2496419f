package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
)

// GoTLSOptions configure one side of the go-tls contender: the smallest
// honest crypto/tls 1.3 mTLS tunnel, to show what Go's TLS costs on its own.
type GoTLSOptions struct {
	// Client sides accept plaintext and dial TLS; server sides accept TLS
	// and dial plaintext.
	Client bool
	Routes []Tunnel
	Cert   string // PEM certificate chain
	Key    string // PEM private key
	Bundle string // PEM CA certificates that peers must chain to
}

// ParseRoute parses a go-tls route "LISTEN=CONNECT".
func ParseRoute(s string) (Tunnel, error) {
	listen, connect, ok := strings.Cut(s, "=")
	if !ok || listen == "" || connect == "" {
		return Tunnel{}, fmt.Errorf("route %q: want LISTEN=CONNECT", s)
	}
	return Tunnel{Name: listen, Listen: listen, Connect: connect}, nil
}

// goTLSConfig is TLS 1.3 with the certificate presented and the peer's
// chain verified against the bundle on every handshake, resumed ones
// included. SPIFFE SVIDs carry no DNS name, so chain verification replaces
// host name verification.
func goTLSConfig(opts GoTLSOptions) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(opts.Cert, opts.Key)
	if err != nil {
		return nil, fmt.Errorf("go-tls: %w", err)
	}
	bundle, err := os.ReadFile(opts.Bundle)
	if err != nil {
		return nil, fmt.Errorf("go-tls: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		return nil, fmt.Errorf("go-tls: no certificates in %s", opts.Bundle)
	}
	verify := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("go-tls: peer sent no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		return err
	}
	cfg := &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{cert},
		VerifyConnection: verify,
	}
	if opts.Client {
		cfg.InsecureSkipVerify = true // VerifyConnection verifies the chain
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1024)
	} else {
		cfg.ClientAuth = tls.RequireAnyClientCert // VerifyConnection verifies the chain
	}
	return cfg, nil
}

// RunGoTLS runs one side of the go-tls pair until ctx ends, then closes its
// listeners and connections and returns.
func RunGoTLS(ctx context.Context, opts GoTLSOptions) error {
	cfg, err := goTLSConfig(opts)
	if err != nil {
		return err
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			conns[c] = struct{}{}
		} else {
			delete(conns, c)
		}
	}
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	for _, r := range opts.Routes {
		l, err := net.Listen("tcp", r.Listen)
		if err != nil {
			return fmt.Errorf("go-tls: %w", err)
		}
		lns = append(lns, l)
		wg.Go(func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				track(c, true)
				wg.Go(func() {
					defer track(c, false)
					goTLSForward(ctx, c, r.Connect, cfg, opts.Client, track)
				})
			}
		})
	}
	<-ctx.Done()
	return nil
}

// goTLSForward carries one accepted connection to target.
func goTLSForward(ctx context.Context, c net.Conn, target string, cfg *tls.Config, client bool, track func(net.Conn, bool)) {
	defer c.Close()
	if !client {
		tc := tls.Server(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return
		}
		c = tc
	}
	var d net.Dialer
	up, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return
	}
	if client {
		tc := tls.Client(up, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			up.Close()
			return
		}
		up = tc
	}
	track(up, true)
	defer track(up, false)
	defer up.Close()
	done := make(chan struct{})
	go func() {
		copyHalf(up, c)
		close(done)
	}()
	copyHalf(c, up)
	<-done
}

// copyHalf copies src to dst, then passes the end of the stream on.
func copyHalf(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	} else {
		dst.Close()
	}
}

func startGoTLS(ctx context.Context, env Env, dir string) (*Instance, error) {
	client, server, front, err := pairTunnels(env.Backends)
	if err != nil {
		return nil, err
	}
	argv := func(c CertFiles, ts []Tunnel, isClient bool) []string {
		a := []string{env.Self, "gotls", "-cert", c.Cert, "-key", c.Key, "-bundle", c.Bundle}
		if isClient {
			a = append(a, "-client")
		}
		for _, t := range ts {
			a = append(a, "-route", t.Listen+"="+t.Connect)
		}
		return a
	}
	inst, err := startPair(ctx, ContenderGoTLS,
		argv(env.Certs.Server, server, false), argv(env.Certs.Client, client, true),
		listenAddrs(server), listenAddrs(client), dir)
	if err != nil {
		return nil, err
	}
	inst.Front = front
	return inst, nil
}
