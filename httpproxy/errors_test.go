package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestClassify(t *testing.T) {
	dialRefused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	tests := []struct {
		name   string
		err    error
		status int
		grpc   int
		reason string
	}{
		{"refused by authorization", fmt.Errorf("dial: %w: %w", ErrRefused, errors.New("alert")), 403, grpcPermissionDenied, ReasonRefused},
		{"dial refused", fmt.Errorf("wrapped: %w", dialRefused), 502, grpcUnavailable, ReasonUnreachable},
		{"deadline", fmt.Errorf("dial: %w", context.DeadlineExceeded), 504, grpcDeadlineExceeded, ReasonTimeout},
		{"io deadline", os.ErrDeadlineExceeded, 504, grpcDeadlineExceeded, ReasonTimeout},
		{"client canceled", context.Canceled, 502, grpcCanceled, ReasonCanceled},
		{"upstream reset mid-exchange", errors.New("connection reset"), 502, grpcUnavailable, ReasonBadGateway},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := classify(tt.err)
			if f.status != tt.status || f.grpc != tt.grpc || f.reason != tt.reason {
				t.Errorf("classify = %+v, want {%d %d %s}", f, tt.status, tt.grpc, tt.reason)
			}
		})
	}
}

func TestFailureWrite(t *testing.T) {
	f := failure{http.StatusBadGateway, grpcUnavailable, ReasonUnreachable}
	tests := []struct {
		name        string
		proto       int
		contentType string
		wantStatus  int
		wantGRPC    string
	}{
		{"HTTP/1", 1, "text/plain", 502, ""},
		{"HTTP/2", 2, "application/json", 502, ""},
		{"gRPC", 2, "application/grpc", 200, "14"},
		{"gRPC with codec", 2, "application/grpc+proto", 200, "14"},
		{"gRPC content type over HTTP/1 is not gRPC", 1, "application/grpc", 502, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/svc/Method", nil)
			r.ProtoMajor = tt.proto
			r.Header.Set("Content-Type", tt.contentType)
			w := httptest.NewRecorder()
			if got := f.write(w, r); got != tt.wantStatus || w.Code != tt.wantStatus {
				t.Errorf("status %d (recorded %d), want %d", got, w.Code, tt.wantStatus)
			}
			if w.Header().Get(ErrorHeader) != ReasonUnreachable {
				t.Errorf("%s = %q", ErrorHeader, w.Header().Get(ErrorHeader))
			}
			if g := w.Header().Get("Grpc-Status"); g != tt.wantGRPC {
				t.Errorf("grpc-status %q, want %q", g, tt.wantGRPC)
			}
		})
	}
}
