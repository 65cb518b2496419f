package test

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// httpApp serves h on a free loopback port with HTTP/1.1 and
// prior-knowledge HTTP/2, and counts the connections it accepts.
type httpApp struct {
	port  uint16
	conns atomic.Int32
}

func startHTTPApp(t testing.TB, h http.Handler) *httpApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &httpApp{port: meshtest.Port(ln.Addr())}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:   h,
		Protocols: &protos,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				app.conns.Add(1)
			}
		},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = srv.Close()
	})
	return app
}

// httpClient returns a client whose requests all go to addr (the client
// proxy's listener), speaking HTTP/1.1 or, with h2c, prior-knowledge
// HTTP/2. Its idle connections are closed when the test ends.
func httpClient(t testing.TB, addr string, h2c bool) *http.Client {
	t.Helper()
	var protos http.Protocols
	if h2c {
		protos.SetUnencryptedHTTP2(true)
	} else {
		protos.SetHTTP1(true)
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		Protocols:          &protos,
		DisableCompression: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// appURL is the URL clients use for path on the server app: the host is
// the meshed name, the connection goes to the client proxy.
func appURL(port uint16, path string) string {
	return "http://" + meshtest.Join(appHost, port) + path
}
