package test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// Chunked bodies and trailers cross both proxies in both directions: the
// request's trailer reaches the app after the body, and the app's trailer,
// computed from a body it streamed in chunks, reaches the client, over
// HTTP/1.1 and HTTP/2.
func TestHTTPChunkedBodiesAndTrailers(t *testing.T) {
	app := startHTTPApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Body-Sum")
		h := sha256.New()
		rc := http.NewResponseController(w)
		for i := range 5 {
			part := fmt.Sprintf("part %d of %q / req-trailer=%s\n", i, body, r.Trailer.Get("X-Request-Sum"))
			h.Write([]byte(part))
			_, _ = io.WriteString(w, part)
			_ = rc.Flush()
		}
		w.Header().Set("X-Body-Sum", fmt.Sprintf("%x", h.Sum(nil)))
	}))
	p := startPair(t, app.port, pairOptions{})
	for _, h2c := range []bool{false, true} {
		t.Run(map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[h2c], func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, appURL(app.port, "/"), io.MultiReader(strings.NewReader("chunk one,"), strings.NewReader("chunk two")))
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = -1 // unknown: chunked on HTTP/1.1
			req.Trailer = http.Header{"X-Request-Sum": {"abc123"}}
			resp, err := httpClient(t, p.listen, h2c).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if !h2c && (len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked") {
				t.Errorf("response transfer encoding %v, want chunked", resp.TransferEncoding)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(body), `part 4 of "chunk one,chunk two" / req-trailer=abc123`) {
				t.Errorf("body %q: the app did not see the request body and trailer", body)
			}
			if got, want := resp.Trailer.Get("X-Body-Sum"), fmt.Sprintf("%x", sha256.Sum256(body)); got != want {
				t.Errorf("response trailer X-Body-Sum = %q, want %q", got, want)
			}
		})
	}
}
