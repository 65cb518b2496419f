package outbound

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/seed722d2a70/meshproxy/identity"
)

func TestConnectErrorReason(t *testing.T) {
	// dialErr is a failed connect as net.Dialer returns it.
	dialErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
	}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"connection refused", dialErr(syscall.ECONNREFUSED), "connection_refused"},
		{"no route to the network", dialErr(syscall.ENETUNREACH), "unreachable"},
		{"host unreachable", dialErr(syscall.EHOSTUNREACH), "unreachable"},
		{"unreachable, wrapped", fmt.Errorf("dialing peer: %w", dialErr(syscall.ENETUNREACH)), "unreachable"},
		{"dial timeout", fmt.Errorf("dial: %w", context.DeadlineExceeded), "timeout"},
		{"dns", &net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}, "dns"},
		{"peer's alert", fmt.Errorf("mTLS handshake: %w", tls.AlertError(48)), "refused_by_peer"},
		{"unmeshed refused", fmt.Errorf("x: %w", ErrUnmeshedRefused), "unmeshed_refused"},
		{"not meshproxy", fmt.Errorf("x: %w", ErrNotMeshproxy), "not_meshproxy"},
		{"peer unauthorized", fmt.Errorf("x: %w", identity.ErrUnauthorized), "unauthorized"},
		{"unforeseen", dialErr(syscall.EPERM), "other"},
		{"unforeseen, not a syscall", errors.New("something else"), "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := connectErrorReason(tt.err); got != tt.want {
				t.Errorf("connectErrorReason(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}
