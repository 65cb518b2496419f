package test

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

// An app's own TLS (an https server with its own certificate) is not
// HTTP to the proxies: it is carried opaque inside the mesh mTLS, and the
// client's handshake with the app succeeds end to end.
func TestAppTLSCarriedOpaqueInsideMTLS(t *testing.T) {
	app := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "secret hello over "+r.Proto)
	}))
	t.Cleanup(app.Close)
	port := portOf(app.Listener)
	p := startPair(t, port, pairOptions{})

	client := app.Client() // trusts the app's own certificate
	tr := client.Transport.(*http.Transport).Clone()
	tr.DialTLSContext = nil
	tr.DialContext = httpClient(t, p.listen, false).Transport.(*http.Transport).DialContext
	// The app's certificate is for example.com; the proxies never see the
	// name inside the ClientHello's encryption.
	tr.TLSClientConfig.ServerName = "example.com"
	client.Transport = tr
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := client.Get("https://" + appHost + ":" + itoa(port) + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "secret hello over HTTP/1.1" && string(body) != "secret hello over HTTP/2.0" {
		t.Fatalf("body %q", body)
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 || resp.TLS.Version < tls.VersionTLS12 {
		t.Error("no TLS session with the app")
	}
	if n := p.client.Metric(t, "request_total", nil); n != 0 {
		t.Errorf("the client proxy counted %v HTTP requests in a TLS stream, want 0", n)
	}
	if n := p.client.Metric(t, "tcp_open_total", map[string]string{"peer": "dst", "tls": "true", "server_id": "spiffe://mesh.test/server"}); n != 1 {
		t.Errorf("mesh mTLS connections = %v, want 1", n)
	}
}

func itoa(n uint16) string { return strconv.Itoa(int(n)) }
