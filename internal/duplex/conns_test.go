package duplex

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/seed722d2a70/meshproxy/internal/tcptest"
	"github.com/seed722d2a70/meshproxy/internal/testcert"
)

// tlsConfigs returns matching server and client configs around a fresh
// self-signed certificate for 127.0.0.1.
func tlsConfigs(tb testing.TB) (server, client *tls.Config) {
	tb.Helper()
	cert := testcert.New(tb, "duplex test")
	server = &tls.Config{Certificates: []tls.Certificate{cert.TLS}, MinVersion: tls.VersionTLS13}
	client = &tls.Config{RootCAs: cert.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
	return server, client
}

// leg is one side of a join: the conn handed to Join (inner) and the far end
// that the test drives (outer), connected over loopback TCP, optionally with
// TLS on top. raw is the outer end's TCP conn, for making resets.
type leg struct {
	inner, outer net.Conn
	raw          *net.TCPConn
}

// newLeg builds a leg; kind is "tcp" or "tls". For "tls" the outer end is the
// TLS client and the inner end the server, both handshaken.
func newLeg(tb testing.TB, kind string) leg {
	tb.Helper()
	outer, inner := tcptest.Pair(tb)
	if kind == "tcp" {
		return leg{inner: inner, outer: outer, raw: outer}
	}
	srvCfg, cliCfg := tlsConfigs(tb)
	srv, cli := tls.Server(inner, srvCfg), tls.Client(outer, cliCfg)
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		tb.Fatal(err)
	}
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
	return leg{inner: srv, outer: cli, raw: outer}
}

func closeWriteOf(tb testing.TB, c net.Conn) {
	tb.Helper()
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		tb.Fatalf("CloseWrite: %v", err)
	}
}

// noCloseWrite hides CloseWrite, like a wrapper around a conn that cannot
// half-close.
type noCloseWrite struct{ net.Conn }

// unsupportedCloseWrite has a CloseWrite that reports errors.ErrUnsupported,
// like a forwarding wrapper around a conn without one.
type unsupportedCloseWrite struct{ net.Conn }

func (unsupportedCloseWrite) CloseWrite() error { return errUnsupported }

// unwrapping is a wrapper that declares what it wraps.
type unwrapping struct{ net.Conn }

func (u unwrapping) Unwrap() net.Conn { return u.Conn }

// selfUnwrapping unwraps to itself forever.
type selfUnwrapping struct{ net.Conn }

func (s *selfUnwrapping) Unwrap() net.Conn { return s }
