package identity

import (
	"crypto/tls"
	"io"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// BenchmarkHandshake measures a full mTLS handshake against a resumed one:
// what the client session cache saves per connection between proxies.
func BenchmarkHandshake(b *testing.B) {
	ca := newTestCA(b, tdExample)
	srvSrc := newStaticSource(b, issue(b, ca, idServer), ca.Bundle())
	cliSrc := newStaticSource(b, issue(b, ca, idClient), ca.Bundle())
	authorize, err := ParseAuthorizer([]string{"example.org"})
	if err != nil {
		b.Fatal(err)
	}
	addr, results := server(b, ServerConfig(srvSrc, authorize))
	for _, bc := range []struct {
		name  string
		cache tls.ClientSessionCache
	}{
		{"full", nil},
		{"resumed", tls.NewLRUClientSessionCache(16)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cliCfg := ClientConfig(cliSrc, authorize, WithSessionCache(bc.cache))
			resumed := 0
			b.ReportAllocs()
			for b.Loop() {
				r := dialOnce(b, addr, cliCfg)
				if s := serverResult(b, results); s.err != nil {
					b.Fatal(s.err)
				}
				if r.cs.DidResume {
					resumed++
				}
			}
			b.ReportMetric(float64(resumed)/float64(b.N), "resumed/op")
		})
	}
}

// dialOnce is dial without the cleanup: a benchmark makes too many
// connections to keep them open until it ends.
func dialOnce(b *testing.B, addr string, cfg *tls.Config) result {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		b.Fatal(err)
	}
	return result{cs: c.ConnectionState()}
}

// BenchmarkVerifyPeer is the per-handshake SPIFFE verification.
func BenchmarkVerifyPeer(b *testing.B) {
	ca := newTestCA(b, tdExample)
	certs := issue(b, ca, idClient).Certificates
	bundles := newStaticSource(b, issue(b, ca, idServer), ca.Bundle())
	authorize := tlsconfig.AuthorizeMemberOf(tdExample)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := VerifyPeer(certs, bundles, authorize); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetX509SVID is the read every handshake makes of the source.
func BenchmarkGetX509SVID(b *testing.B) {
	ca := newTestCA(b, tdExample)
	src := newStaticSource(b, issue(b, ca, idServer), ca.Bundle())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := currentCertificate(src); err != nil {
				b.Fatal(err)
			}
		}
	})
}
