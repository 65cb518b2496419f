package test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"

	"github.com/seed722d2a70/meshproxy/internal/duplex"
	"github.com/seed722d2a70/meshproxy/internal/testcert"
)

// goTLSTunnel starts the go-tls baseline in-process: a client side that
// takes plaintext and carries it over TLS 1.3 with mutual certificates to a
// server side that forwards it to 127.0.0.1:appPort, as two joined copies
// and nothing else. It returns the client side's address. Benchmarks put
// the proxy pair beside it: what Go's TLS costs on its own, in the same run.
func goTLSTunnel(tb testing.TB, appPort uint16) string {
	tb.Helper()
	cert := testcert.New(tb, "go-tls")
	// The one throwaway certificate serves both ends; it is made for
	// servers, so the client's is checked for any key usage, as go-tls in
	// bench/ checks SVIDs.
	server := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert.TLS},
		ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: cert.Pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			return err
		}}
	client := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert.TLS},
		RootCAs: cert.Pool, ServerName: "127.0.0.1"}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	var d net.Dialer
	far := tunnelSide(tb, ctx, func(c net.Conn) (net.Conn, net.Conn, error) {
		up, err := d.DialContext(ctx, "tcp", "127.0.0.1:"+itoa(appPort))
		return tls.Server(c, server), up, err
	})
	return tunnelSide(tb, ctx, func(c net.Conn) (net.Conn, net.Conn, error) {
		up, err := d.DialContext(ctx, "tcp", far)
		if err != nil {
			return c, nil, err
		}
		return c, tls.Client(up, client), nil
	})
}

// tunnelSide accepts on a free loopback port and joins each connection,
// as open turns it, with its upstream until ctx ends.
func tunnelSide(tb testing.TB, ctx context.Context, open func(net.Conn) (down, up net.Conn, err error)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	tb.Cleanup(func() { stop(); _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				down, up, err := open(c)
				if err != nil {
					_ = c.Close()
					return
				}
				for _, tc := range []net.Conn{down, up} {
					if t, ok := tc.(*tls.Conn); ok && t.HandshakeContext(ctx) != nil {
						_ = down.Close()
						_ = up.Close()
						return
					}
				}
				_, _ = duplex.Join(ctx, down, up, duplex.Options{})
			}()
		}
	}()
	return ln.Addr().String()
}
