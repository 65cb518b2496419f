package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var (
	tdExample = spiffeid.RequireTrustDomainFromString("example.org")
	tdOther   = spiffeid.RequireTrustDomainFromString("other.org")
	idClient  = spiffeid.RequireFromString("spiffe://example.org/ns/client")
	idServer  = spiffeid.RequireFromString("spiffe://example.org/ns/server")
)

func newTestCA(t testing.TB, td spiffeid.TrustDomain) *CA {
	t.Helper()
	ca, err := NewCA(td)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t testing.TB, ca *CA, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	svid, err := ca.Issue(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return svid
}

// handMade issues, with ca's key, a leaf for id changed by edit: for
// certificates the CA would never issue. The SVID's ID field is id.
func handMade(t testing.TB, ca *CA, id spiffeid.ID, edit func(*x509.Certificate)) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	edit(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}
}

// staticSource is a Source whose SVID and bundles the test sets.
type staticSource struct{ *state }

func newStaticSource(t testing.TB, svid *x509svid.SVID, bundles ...*x509bundle.Bundle) *staticSource {
	t.Helper()
	s := &staticSource{newState()}
	if svid != nil {
		s.setSVID(t, svid, bundles...)
	}
	return s
}

func (s *staticSource) setSVID(t testing.TB, svid *x509svid.SVID, bundles ...*x509bundle.Bundle) {
	t.Helper()
	if _, err := s.set(svid, x509bundle.NewSet(bundles...)); err != nil {
		t.Fatal(err)
	}
}

func (s *staticSource) Close() error { return nil }

// result is one side of a loopback TLS handshake.
type result struct {
	err  error
	cs   tls.ConnectionState
	conn *tls.Conn
}

// server accepts TLS connections on 127.0.0.1 with cfg. Each accepted
// connection's handshake result is sent on the returned channel; after a
// successful handshake the server writes one byte (so the client receives
// its session ticket) and then echoes until the client closes.
func server(t testing.TB, cfg *tls.Config) (addr string, results <-chan result) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan result, 16)
	done := make(chan struct{})
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			tc := tls.Server(raw, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = tc.HandshakeContext(ctx)
			cancel()
			ch <- result{err: err, cs: tc.ConnectionState(), conn: tc}
			if err != nil {
				_ = tc.Close()
				continue
			}
			go func() {
				defer tc.Close()
				if _, err := tc.Write([]byte{'!'}); err != nil {
					return
				}
				_, _ = io.Copy(tc, tc)
			}()
		}
	}()
	return ln.Addr().String(), ch
}

// dial completes a TLS handshake with addr and reads the server's first
// byte, so that a session ticket sent with it is stored. The connection is
// closed at the end of the test.
func dial(t testing.TB, addr string, cfg *tls.Config) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return result{err: err}
	}
	tc := c.(*tls.Conn)
	t.Cleanup(func() { _ = tc.Close() })
	_ = tc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	if _, err := io.ReadFull(tc, b[:]); err != nil {
		return result{err: err, cs: tc.ConnectionState(), conn: tc}
	}
	_ = tc.SetReadDeadline(time.Time{})
	return result{cs: tc.ConnectionState(), conn: tc}
}

// serverResult waits for the server's side of the latest handshake.
func serverResult(t testing.TB, results <-chan result) result {
	t.Helper()
	select {
	case r := <-results:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("server handshake did not finish")
		return result{}
	}
}
