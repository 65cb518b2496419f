package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
)

// Handshake refusals and source states. Errors returned by the TLS
// configurations and [PeerID] wrap exactly one of the refusal sentinels, so
// callers classify them with errors.Is (or [RefusalReason] for metrics).
var (
	// ErrNoIdentity: the peer presented no certificate, or its leaf does not
	// carry exactly one well-formed SPIFFE ID URI SAN.
	ErrNoIdentity = errors.New("peer presented no SPIFFE identity")

	// ErrUntrusted: the peer's certificate chain does not verify against the
	// trust bundle of its trust domain, or there is no bundle for that trust
	// domain.
	ErrUntrusted = errors.New("peer certificate is not trusted")

	// ErrExpired: a certificate in the peer's chain is expired or not yet
	// valid. Errors wrapping ErrExpired also wrap ErrUntrusted.
	ErrExpired = errors.New("certificate expired or not yet valid")

	// ErrUnauthorized: the peer's SVID verified but the authorizer refused
	// its SPIFFE ID.
	ErrUnauthorized = errors.New("peer SPIFFE ID is not authorized")

	// ErrNotReady: the source holds no SVID yet, so there is nothing to
	// present to peers.
	ErrNotReady = errors.New("no X509-SVID yet")
)

// Refusal reasons returned by [RefusalReason]; bounded, for metric labels.
const (
	ReasonNoIdentity   = "no_identity"
	ReasonUntrusted    = "untrusted"
	ReasonExpired      = "expired"
	ReasonUnauthorized = "unauthorized"
	ReasonNotReady     = "not_ready"
	ReasonTimeout      = "timeout"
	ReasonOther        = "other"
)

// RefusalReason maps a handshake or verification error to a bounded metric
// label: one of the Reason constants. It returns "" for a nil error.
func RefusalReason(err error) string {
	var invalid x509.CertificateInvalidError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrExpired):
		return ReasonExpired
	case errors.Is(err, ErrUntrusted):
		if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
			return ReasonExpired
		}
		return ReasonUntrusted
	case errors.Is(err, ErrNoIdentity):
		return ReasonNoIdentity
	case errors.Is(err, ErrUnauthorized):
		return ReasonUnauthorized
	case errors.Is(err, ErrNotReady):
		return ReasonNotReady
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return ReasonTimeout
	}
	return ReasonOther
}
