package duplex

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/internal/tcptest"
)

// tlsConfigs returns matching server and client configs around a fresh
// self-signed certificate for 127.0.0.1.
func tlsConfigs(tb testing.TB) (server, client *tls.Config) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "duplex test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS13,
	}
	client = &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
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
