package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// ErrorHeader names the proxy as the source of a response it made itself
// because forwarding failed; its value is the reason.
const ErrorHeader = "meshproxy-error"

// ErrRefused marks a dial error that is an authorization refusal (the peer
// refused our identity, or its identity is not the one expected), so the
// request is answered 403 rather than 502. Dial functions wrap their error
// with it.
var ErrRefused = errors.New("refused by authorization")

// Reasons for proxy-made answers: the value of the meshproxy-error header
// and the reason label of http_proxy_errors_total.
const (
	ReasonUnreachable = "unreachable"  // could not connect: 502
	ReasonBadGateway  = "bad_gateway"  // the upstream failed the exchange: 502
	ReasonTimeout     = "timeout"      // 504
	ReasonRefused     = "refused"      // 403
	ReasonCanceled    = "canceled"     // the client went away
	ReasonMethod      = "bad_method"   // CONNECT where it cannot be carried: 405
	ReasonNoUpgrade   = "bad_upgrade"  // an upgrade the upstream answered wrongly: 502
	ReasonTunnel      = "tunnel_error" // CONNECT's upstream answer was not HTTP: 502
	// A request head the HTTP/1 relay refused: malformed (400, 501, 505)
	// or larger than it takes (431).
	ReasonBadRequest   = "bad_request"
	ReasonHeadTooLarge = "header_too_large"
)

// gRPC status codes the proxy answers with.
const (
	grpcCanceled         = 1
	grpcDeadlineExceeded = 4
	grpcPermissionDenied = 7
	grpcUnavailable      = 14
)

// failure is a proxy-made answer.
type failure struct {
	status int
	grpc   int
	reason string
}

// classify maps a forwarding error to the answer the client gets.
func classify(err error) failure {
	var ne net.Error
	switch {
	case errors.Is(err, ErrRefused):
		return failure{http.StatusForbidden, grpcPermissionDenied, ReasonRefused}
	case errors.Is(err, context.Canceled):
		return failure{http.StatusBadGateway, grpcCanceled, ReasonCanceled}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return failure{http.StatusGatewayTimeout, grpcDeadlineExceeded, ReasonTimeout}
	case isDialError(err):
		return failure{http.StatusBadGateway, grpcUnavailable, ReasonUnreachable}
	}
	return failure{http.StatusBadGateway, grpcUnavailable, ReasonBadGateway}
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// refusal is the answer to every request on a connection whose peer may
// not reach its port.
func refusal(reason string) failure {
	return failure{http.StatusForbidden, grpcPermissionDenied, reason}
}

// isGRPC reports whether r is a gRPC call, whose errors must be told as a
// grpc-status for the client library to understand them.
func isGRPC(r *http.Request) bool {
	return r.ProtoMajor == 2 && isGRPCType(r.Header.Get("Content-Type"))
}

// isGRPCType reports whether a request's content type is gRPC's.
func isGRPCType(ct string) bool {
	return ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+") ||
		strings.HasPrefix(ct, "application/grpc;")
}

// write answers r with f. A gRPC call gets a trailers-only response: 200
// with grpc-status in the only HEADERS frame, which is how gRPC servers
// report errors without a body.
func (f failure) write(w http.ResponseWriter, r *http.Request) int {
	h := w.Header()
	h.Set(ErrorHeader, f.reason)
	if isGRPC(r) {
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", strconv.Itoa(f.grpc))
		h.Set("Grpc-Message", "meshproxy: "+f.reason)
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(f.status)
	_, _ = w.Write([]byte(f.text()))
	return f.status
}

// text is the body of a proxy-made answer.
func (f failure) text() string { return "meshproxy: " + f.reason + "\n" }

// writeH1 answers with f on a connection of the HTTP/1 relay, asking the
// client to close it when closeConn.
func (f failure) writeH1(w *bufio.Writer, closeConn bool) int {
	text := f.text()
	fmt.Fprintf(w, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n%s: %s\r\nContent-Length: %d\r\n",
		f.status, http.StatusText(f.status), http.CanonicalHeaderKey(ErrorHeader), f.reason, len(text))
	if closeConn {
		_, _ = w.WriteString("Connection: close\r\n")
	}
	_, _ = w.WriteString("\r\n")
	_, _ = w.WriteString(text)
	return f.status
}
