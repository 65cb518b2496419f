package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"testing"
)

func TestRefusalReason(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{fmt.Errorf("x: %w", ErrNoIdentity), ReasonNoIdentity},
		{fmt.Errorf("x: %w", ErrUntrusted), ReasonUntrusted},
		{fmt.Errorf("%w: %w", ErrUntrusted, ErrExpired), ReasonExpired},
		{fmt.Errorf("%w: %w", ErrUntrusted, x509.CertificateInvalidError{Reason: x509.Expired}), ReasonExpired},
		{fmt.Errorf("%w: %w", ErrUntrusted, x509.UnknownAuthorityError{}), ReasonUntrusted},
		{fmt.Errorf("x: %w", ErrUnauthorized), ReasonUnauthorized},
		{ErrNotReady, ReasonNotReady},
		{fmt.Errorf("handshake: %w", context.DeadlineExceeded), ReasonTimeout},
		{fmt.Errorf("read: %w", os.ErrDeadlineExceeded), ReasonTimeout},
		{errors.New("tls: client didn't provide a certificate"), ReasonOther},
	}
	for _, tt := range tests {
		if got := RefusalReason(tt.err); got != tt.want {
			t.Errorf("RefusalReason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
