package test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed722d2a70/meshproxy/config"
)

// When forwarding fails, HTTP clients get a real answer from the proxy,
// saying so in a meshproxy-error header, and gRPC clients the matching
// status: an unreachable peer is 502 / UNAVAILABLE, a response timeout 504
// / DEADLINE_EXCEEDED, a refusal by authorization (the peer's policy, or a
// peer that is not who the destination says) 403 / PERMISSION_DENIED. Each
// is counted and logged, no log field twice.
func TestHTTPFailuresBecomeProxyAnswers(t *testing.T) {
	slow := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}
	tests := []struct {
		name      string
		opts      pairOptions
		stopPeer  bool
		status    int
		code      codes.Code
		header    string // meshproxy-error
		errorSide string // "client" or "server": whose http_proxy_errors_total counts it
	}{
		{name: "peer proxy down", stopPeer: true,
			status: http.StatusBadGateway, code: codes.Unavailable, header: "unreachable", errorSide: "client"},
		{name: "response timeout", opts: pairOptions{clientCfg: func(c *config.Config) { c.Outbound.ResponseTimeout = 300 * time.Millisecond }},
			status: http.StatusGatewayTimeout, code: codes.DeadlineExceeded, header: "timeout", errorSide: "client"},
		{name: "peer's policy refuses the client", opts: pairOptions{serverCfg: func(c *config.Config) { c.Inbound.Authorize = []string{"spiffe://mesh.test/someone-else"} }},
			status: http.StatusForbidden, code: codes.PermissionDenied, header: "unauthorized", errorSide: "server"},
		{name: "peer is not the expected identity", opts: pairOptions{identity: []string{"spiffe://mesh.test/someone-else"}},
			status: http.StatusForbidden, code: codes.PermissionDenied, header: "refused", errorSide: "client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := startHTTPApp(t, http.HandlerFunc(slow))
			p := startPair(t, app.port, tt.opts)
			if tt.stopPeer {
				<-p.server.Shutdown()
			}
			errorSide := p.client
			if tt.errorSide == "server" {
				errorSide = p.server
			}

			resp, err := httpClient(t, p.listen, false).Get(appURL(app.port, "/"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || resp.Header.Get("meshproxy-error") != tt.header {
				t.Errorf("HTTP/1: %s, meshproxy-error %q (%q), want %d, %q", resp.Status, resp.Header.Get("meshproxy-error"), body, tt.status, tt.header)
			}

			cc := grpcClient(t, p.listen, app.port)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			in := []byte("hello")
			err = cc.Invoke(ctx, "/meshtest.Echo/Unary", &in, new([]byte))
			if status.Code(err) != tt.code {
				t.Errorf("gRPC: %v, want %v", err, tt.code)
			}

			if n := errorSide.Metric(t, "http_proxy_errors_total", map[string]string{"reason": tt.header}); n != 2 {
				t.Errorf("%s proxy counted %v %s errors, want 2", tt.errorSide, n, tt.header)
			}
			if len(errorSide.LogsContaining("request failed")) != 2 {
				t.Errorf("%s proxy logged %d failed requests, want 2", tt.errorSide, len(errorSide.LogsContaining("request failed")))
			}
			if n := p.client.Metric(t, "response_total", map[string]string{"classification": "failure"}); tt.status >= 500 && n != 2 {
				t.Errorf("client proxy counted %v failures, want 2", n)
			}
			// Each line once more as JSON: a field the logger already
			// carries, added again, would be written twice.
			p.client.CheckLogKeys(t)
			p.server.CheckLogKeys(t)
		})
	}
}
