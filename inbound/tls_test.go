package inbound

import (
	"crypto/tls"
	"errors"
	"testing"

	"github.com/seed722d2a70/meshproxy/internal/header"
)

// A failed handshake is explained by the peer's offer only when the offer
// could not have succeeded: no accepted version, or ALPN protocols none of
// which the server accepts. Anything else stays unexplained here.
func TestOfferedRefusal(t *testing.T) {
	cfg := serverTLS(&tls.Config{MinVersion: tls.VersionTLS13})
	tls13 := []uint16{tls.VersionTLS13, tls.VersionTLS12}
	tests := []struct {
		name  string
		offer offered
		want  error
	}{
		{"no ClientHello read", offered{}, nil},
		{"TLS 1.2 only", offered{seen: true, versions: []uint16{tls.VersionTLS12}, protos: []string{header.ALPN}}, ErrTLSVersion},
		{"TLS 1.2 only, h2 only", offered{seen: true, versions: []uint16{tls.VersionTLS12}, protos: []string{"h2"}}, ErrTLSVersion},
		{"h2 only", offered{seen: true, versions: tls13, protos: []string{"h2"}}, ErrALPN},
		{"h2 and http/1.1", offered{seen: true, versions: tls13, protos: []string{"h2", "http/1.1"}}, ErrALPN},
		{"transport header among others", offered{seen: true, versions: tls13, protos: []string{"h2", header.ALPN}}, nil},
		{"no ALPN: refused after the handshake", offered{seen: true, versions: tls13}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.offer.refusal(cfg); !errors.Is(got, tt.want) || (got == nil) != (tt.want == nil) {
				t.Errorf("refusal() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRefusalReasonOfHandshakeOffers(t *testing.T) {
	for err, want := range map[error]string{ErrTLSVersion: "tls_version", ErrALPN: "alpn", ErrPlaintext: "plaintext"} {
		if got := refusalReason(err); got != want {
			t.Errorf("refusalReason(%v) = %q, want %q", err, got, want)
		}
	}
}
