package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// TestServerRefusesClients runs real handshakes in which the server must
// refuse the client's SVID, and one it must accept.
func TestServerRefusesClients(t *testing.T) {
	ca := newTestCA(t, tdExample)
	otherTD := newTestCA(t, tdOther)
	impostor := newTestCA(t, tdExample) // same trust domain name, other key
	srvSrc := newStaticSource(t, issue(t, ca, idServer), ca.Bundle())

	tests := []struct {
		name    string
		svid    *x509svid.SVID
		want    error // nil: accepted
		reason  string
		allowed spiffeid.ID
	}{
		{name: "valid", svid: issue(t, ca, idClient)},
		{
			name: "expired",
			svid: handMade(t, ca, idClient, func(c *x509.Certificate) {
				c.NotBefore, c.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
			}),
			want: ErrExpired, reason: ReasonExpired,
		},
		{
			name: "not yet valid",
			svid: handMade(t, ca, idClient, func(c *x509.Certificate) {
				c.NotBefore, c.NotAfter = time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)
			}),
			want: ErrExpired, reason: ReasonExpired,
		},
		{
			name: "trust domain without bundle",
			svid: issue(t, otherTD, spiffeid.RequireFromString("spiffe://other.org/ns/client")),
			want: ErrUntrusted, reason: ReasonUntrusted,
		},
		{
			name: "foreign CA with the same trust domain name",
			svid: issue(t, impostor, idClient),
			want: ErrUntrusted, reason: ReasonUntrusted,
		},
		{
			name: "leaf with CA bit",
			svid: handMade(t, ca, idClient, func(c *x509.Certificate) {
				c.IsCA, c.KeyUsage = true, c.KeyUsage|x509.KeyUsageCertSign
			}),
			want: ErrUntrusted, reason: ReasonUntrusted,
		},
		{
			name: "no URI SAN",
			svid: handMade(t, ca, idClient, func(c *x509.Certificate) {
				c.URIs = nil
				c.DNSNames = []string{"client.example.org"}
			}),
			want: ErrNoIdentity, reason: ReasonNoIdentity,
		},
		{
			name: "two URI SANs",
			svid: handMade(t, ca, idClient, func(c *x509.Certificate) {
				c.URIs = append(c.URIs, &url.URL{Scheme: "spiffe", Host: "example.org", Path: "/ns/admin"})
			}),
			want: ErrNoIdentity, reason: ReasonNoIdentity,
		},
		{
			name: "non-SPIFFE URI SAN",
			svid: handMade(t, ca, idClient, func(c *x509.Certificate) {
				c.URIs = []*url.URL{{Scheme: "https", Host: "example.org", Path: "/ns/client"}}
			}),
			want: ErrNoIdentity, reason: ReasonNoIdentity,
		},
		{
			name:    "unauthorized ID",
			svid:    issue(t, ca, spiffeid.RequireFromString("spiffe://example.org/ns/intruder")),
			want:    ErrUnauthorized,
			reason:  ReasonUnauthorized,
			allowed: idClient,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			allowed := idClient
			if !tt.allowed.IsZero() {
				allowed = tt.allowed
			}
			addr, results := server(t, ServerConfig(srvSrc, tlsconfig.AuthorizeID(allowed)))
			cliSrc := newStaticSource(t, tt.svid, ca.Bundle())
			cli := dial(t, addr, ClientConfig(cliSrc, tlsconfig.AuthorizeID(idServer)))
			srv := serverResult(t, results)

			if tt.want == nil {
				if srv.err != nil || cli.err != nil {
					t.Fatalf("handshake failed: server %v, client %v", srv.err, cli.err)
				}
				if got, err := PeerID(srv.cs); err != nil || got != idClient {
					t.Errorf("server's PeerID = %v, %v; want %v", got, err, idClient)
				}
				if got, err := PeerID(cli.cs); err != nil || got != idServer {
					t.Errorf("client's PeerID = %v, %v; want %v", got, err, idServer)
				}
				if cli.cs.Version != tls.VersionTLS13 {
					t.Errorf("version %x, want TLS 1.3", cli.cs.Version)
				}
				return
			}
			if !errors.Is(srv.err, tt.want) {
				t.Fatalf("server error %v, want %v", srv.err, tt.want)
			}
			if got := RefusalReason(srv.err); got != tt.reason {
				t.Errorf("RefusalReason = %q, want %q (error %v)", got, tt.reason, srv.err)
			}
			if cli.err == nil {
				t.Error("client completed a connection the server refused")
			}
		})
	}
}

// TestClientRefusesServers checks the client's side: the server's SVID is
// verified and authorized as strictly as a client's.
func TestClientRefusesServers(t *testing.T) {
	ca := newTestCA(t, tdExample)
	impostor := newTestCA(t, tdExample)
	cliSrc := newStaticSource(t, issue(t, ca, idClient), ca.Bundle())

	tests := []struct {
		name string
		svid *x509svid.SVID
		want error
	}{
		{name: "valid", svid: issue(t, ca, idServer)},
		{name: "unauthorized", svid: issue(t, ca, spiffeid.RequireFromString("spiffe://example.org/ns/other")), want: ErrUnauthorized},
		{name: "untrusted", svid: issue(t, impostor, idServer), want: ErrUntrusted},
		{
			name: "expired",
			svid: handMade(t, ca, idServer, func(c *x509.Certificate) {
				c.NotBefore, c.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
			}),
			want: ErrExpired,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srvSrc := newStaticSource(t, tt.svid, ca.Bundle())
			addr, results := server(t, ServerConfig(srvSrc, tlsconfig.AuthorizeMemberOf(tdExample)))
			cli := dial(t, addr, ClientConfig(cliSrc, tlsconfig.AuthorizeID(idServer)))
			srv := serverResult(t, results)
			if tt.want == nil {
				if cli.err != nil || srv.err != nil {
					t.Fatalf("handshake failed: client %v, server %v", cli.err, srv.err)
				}
				return
			}
			if !errors.Is(cli.err, tt.want) {
				t.Fatalf("client error %v, want %v", cli.err, tt.want)
			}
			if srv.err == nil {
				t.Error("server completed a handshake the client refused")
			}
		})
	}
}

// TestResumedHandshakeIsAuthorized shows that sessions resume, and that a
// resumed handshake from a client whose authorization was withdrawn is
// refused: crypto/tls skips VerifyPeerCertificate on resumption, so
// authorization must happen in VerifyConnection.
func TestResumedHandshakeIsAuthorized(t *testing.T) {
	ca := newTestCA(t, tdExample)
	srvSrc := newStaticSource(t, issue(t, ca, idServer), ca.Bundle())
	cliSrc := newStaticSource(t, issue(t, ca, idClient), ca.Bundle())

	var allowClient atomic.Bool
	allowClient.Store(true)
	policy := tlsconfig.AdaptMatcher(func(id spiffeid.ID) error {
		if id == idClient && allowClient.Load() {
			return nil
		}
		return fmt.Errorf("%s not allowed", id)
	})
	srvCfg := ServerConfig(srvSrc, policy)
	var lastResumed atomic.Bool
	verify := srvCfg.VerifyConnection
	srvCfg.VerifyConnection = func(cs tls.ConnectionState) error {
		lastResumed.Store(cs.DidResume)
		return verify(cs)
	}
	addr, results := server(t, srvCfg)
	cliCfg := ClientConfig(cliSrc, tlsconfig.AuthorizeID(idServer))

	first := dial(t, addr, cliCfg)
	if err := first.err; err != nil {
		t.Fatal(err)
	}
	if r := serverResult(t, results); r.err != nil {
		t.Fatal(r.err)
	}
	if first.cs.DidResume {
		t.Fatal("first handshake resumed a session")
	}

	second := dial(t, addr, cliCfg)
	if second.err != nil {
		t.Fatal(second.err)
	}
	if r := serverResult(t, results); r.err != nil {
		t.Fatal(r.err)
	}
	if !second.cs.DidResume {
		t.Fatal("second handshake did not resume the session")
	}
	if id, err := PeerID(second.cs); err != nil || id != idServer {
		t.Errorf("PeerID after resumption = %v, %v", id, err)
	}

	allowClient.Store(false)
	third := dial(t, addr, cliCfg)
	srv := serverResult(t, results)
	if !lastResumed.Load() {
		t.Fatal("third handshake was not a resumption; the test proves nothing")
	}
	if !errors.Is(srv.err, ErrUnauthorized) {
		t.Fatalf("server accepted a resumed session of a withdrawn client: %v", srv.err)
	}
	if third.err == nil {
		t.Error("client completed a connection the server refused")
	}
}

// TestRotation shows that a rotated SVID reaches new handshakes at once and
// leaves established connections working.
func TestRotation(t *testing.T) {
	ca := newTestCA(t, tdExample)
	srvSrc, err := NewDevSource(ca, idServer, time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srvSrc.Close()
	cliSrc := newStaticSource(t, issue(t, ca, idClient), ca.Bundle())
	addr, results := server(t, ServerConfig(srvSrc, tlsconfig.AuthorizeAny()))
	cliCfg := ClientConfig(cliSrc, tlsconfig.AuthorizeID(idServer), WithSessionCache(nil))

	old := dial(t, addr, cliCfg)
	if old.err != nil {
		t.Fatal(old.err)
	}
	serverResult(t, results)
	oldSerial := old.cs.PeerCertificates[0].SerialNumber

	changed := srvSrc.Changed()
	if _, err := srvSrc.rotate(); err != nil {
		t.Fatal(err)
	}
	<-changed
	svid, _ := srvSrc.GetX509SVID()
	newSerial := svid.Certificates[0].SerialNumber
	if newSerial.Cmp(oldSerial) == 0 {
		t.Fatal("rotation kept the serial number")
	}

	// The established connection still carries data.
	msg := []byte("still here")
	if _, err := old.conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(old.conn, got); err != nil || string(got) != string(msg) {
		t.Fatalf("echo on the old connection: %q, %v", got, err)
	}

	fresh := dial(t, addr, cliCfg)
	if fresh.err != nil {
		t.Fatal(fresh.err)
	}
	serverResult(t, results)
	if got := fresh.cs.PeerCertificates[0].SerialNumber; got.Cmp(newSerial) != 0 {
		t.Errorf("new handshake presented serial %x, want the rotated %x", got, newSerial)
	}
}

// TestNotReadySourceRefusesHandshakes: with no SVID there is nothing to
// present, and the error says so.
func TestNotReadySourceRefusesHandshakes(t *testing.T) {
	ca := newTestCA(t, tdExample)
	addr, results := server(t, ServerConfig(newStaticSource(t, nil), tlsconfig.AuthorizeAny()))
	cli := dial(t, addr, ClientConfig(newStaticSource(t, issue(t, ca, idClient), ca.Bundle()), tlsconfig.AuthorizeAny()))
	srv := serverResult(t, results)
	if !errors.Is(srv.err, ErrNotReady) || RefusalReason(srv.err) != ReasonNotReady {
		t.Fatalf("server error %v, want ErrNotReady", srv.err)
	}
	if cli.err == nil {
		t.Error("client connected to a server without an SVID")
	}
}

// TestNilAuthorizerRefuses: forgetting the authorizer fails closed.
func TestNilAuthorizerRefuses(t *testing.T) {
	ca := newTestCA(t, tdExample)
	_, err := VerifyPeer(issue(t, ca, idClient).Certificates, ca.Bundle(), nil)
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("VerifyPeer with nil authorizer = %v, want ErrUnauthorized", err)
	}
}

func TestPeerIDWithoutCertificate(t *testing.T) {
	if _, err := PeerID(tls.ConnectionState{}); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("PeerID = %v, want ErrNoIdentity", err)
	}
}

func TestNextProtos(t *testing.T) {
	ca := newTestCA(t, tdExample)
	srvSrc := newStaticSource(t, issue(t, ca, idServer), ca.Bundle())
	cliSrc := newStaticSource(t, issue(t, ca, idClient), ca.Bundle())
	addr, results := server(t, ServerConfig(srvSrc, tlsconfig.AuthorizeAny(), WithNextProtos("x/1")))
	cli := dial(t, addr, ClientConfig(cliSrc, tlsconfig.AuthorizeAny(), WithNextProtos("x/2", "x/1")))
	serverResult(t, results)
	if cli.err != nil || cli.cs.NegotiatedProtocol != "x/1" {
		t.Fatalf("negotiated %q, %v; want x/1", cli.cs.NegotiatedProtocol, cli.err)
	}
}

// TestNoResumptionAcrossRotation: sessions resume while nothing changes,
// but once either side rotates its SVID the next handshake is a full one,
// so each peer sees the other's new certificate rather than the one the
// session began with.
func TestNoResumptionAcrossRotation(t *testing.T) {
	ca := newTestCA(t, tdExample)
	srvSrc := newStaticSource(t, issue(t, ca, idServer), ca.Bundle())
	cliSrc := newStaticSource(t, issue(t, ca, idClient), ca.Bundle())
	addr, results := server(t, ServerConfig(srvSrc, tlsconfig.AuthorizeAny()))
	cliCfg := ClientConfig(cliSrc, tlsconfig.AuthorizeID(idServer))
	serial := func(s *staticSource) string {
		svid, err := s.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		return svid.Certificates[0].SerialNumber.String()
	}
	// connect checks that the handshake resumed or not as wanted, and that
	// each side saw the other's current certificate.
	connect := func(step string, wantResumed bool) {
		t.Helper()
		cli := dial(t, addr, cliCfg)
		srv := serverResult(t, results)
		if cli.err != nil || srv.err != nil {
			t.Fatalf("%s: client %v, server %v", step, cli.err, srv.err)
		}
		if cli.cs.DidResume != wantResumed {
			t.Errorf("%s: resumed %v, want %v", step, cli.cs.DidResume, wantResumed)
		}
		if got, want := cli.cs.PeerCertificates[0].SerialNumber.String(), serial(srvSrc); got != want {
			t.Errorf("%s: client saw server serial %s, want the current %s", step, got, want)
		}
		if got, want := srv.cs.PeerCertificates[0].SerialNumber.String(), serial(cliSrc); got != want {
			t.Errorf("%s: server saw client serial %s, want the current %s", step, got, want)
		}
	}

	connect("first", false)
	connect("again", true)
	srvSrc.setSVID(t, issue(t, ca, idServer), ca.Bundle())
	connect("after the server rotated", false)
	connect("again", true)
	cliSrc.setSVID(t, issue(t, ca, idClient), ca.Bundle())
	connect("after the client rotated", false)
	connect("again", true)
}

// mapCache is a ClientSessionCache that shows what it holds.
type mapCache struct {
	mu sync.Mutex
	m  map[string]*tls.ClientSessionState
}

func (c *mapCache) Get(key string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs, ok := c.m[key]
	return cs, ok
}

func (c *mapCache) Put(key string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs == nil {
		delete(c.m, key)
		return
	}
	c.m[key] = cs
}

func (c *mapCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// A peer has one session in the cache however often the SVIDs rotate:
// keyed by epoch, each rotation left a dead session (with the peer's
// parsed chain) behind until the LRU was full, and a client proxy with
// 60 s SVIDs grew by megabytes an hour.
func TestSessionCacheHoldsOneSessionPerPeerAcrossRotations(t *testing.T) {
	ca := newTestCA(t, tdExample)
	srvSrc := newStaticSource(t, issue(t, ca, idServer), ca.Bundle())
	cliSrc := newStaticSource(t, issue(t, ca, idClient), ca.Bundle())
	addr, results := server(t, ServerConfig(srvSrc, tlsconfig.AuthorizeAny()))
	cache := &mapCache{m: map[string]*tls.ClientSessionState{}}
	cliCfg := ClientConfig(cliSrc, tlsconfig.AuthorizeID(idServer), WithSessionCache(cache))
	connect := func(wantResumed bool) {
		t.Helper()
		cli := dial(t, addr, cliCfg)
		srv := serverResult(t, results)
		if cli.err != nil || srv.err != nil {
			t.Fatalf("client %v, server %v", cli.err, srv.err)
		}
		if cli.cs.DidResume != wantResumed {
			t.Errorf("resumed %v, want %v", cli.cs.DidResume, wantResumed)
		}
	}
	for i := range 5 {
		connect(false) // a new epoch: a full handshake
		connect(true)
		if n := cache.len(); n != 1 {
			t.Fatalf("after %d rotations the cache holds %d sessions for one peer, want 1", i, n)
		}
		cliSrc.setSVID(t, issue(t, ca, idClient), ca.Bundle())
	}
}
