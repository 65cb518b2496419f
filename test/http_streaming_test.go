package test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"
)

// streamSize is the size of the large bodies, and chunk the piece that must
// cross the proxies before the rest is even produced.
const streamSize, chunk = 64 << 20, 64 << 10

// pattern writes n pseudo-random bytes from seed to w in chunks, calling
// after(i) once chunk i has been written.
func pattern(w io.Writer, seed uint64, n int, after func(i int)) error {
	r := rand.NewChaCha8([32]byte{byte(seed)})
	buf := make([]byte, chunk)
	for i := 0; n > 0; i++ {
		m := min(n, chunk)
		_, _ = r.Read(buf[:m])
		if _, err := w.Write(buf[:m]); err != nil {
			return err
		}
		n -= m
		after(i)
	}
	return nil
}

func patternSum(seed uint64, n int) [32]byte {
	h := sha256.New()
	_ = pattern(h, seed, n, func(int) {})
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// waitOrFail waits for ch: a body the proxies held back instead of
// streaming never lets it close.
func waitOrFail(ch <-chan struct{}, what string) error {
	select {
	case <-ch:
		return nil
	case <-time.After(20 * time.Second):
		return fmt.Errorf("%s never arrived: the body is being buffered, not streamed", what)
	}
}

// 64 MiB bodies stream both ways through both proxies, over HTTP/1.1 and
// HTTP/2, without being buffered: each side produces the rest of its body
// only after the first 64 KiB reached the other end, which could not happen
// if a proxy waited for the whole body.
func TestHTTPLargeBodiesStreamBothWays(t *testing.T) {
	uploadSeen := make(chan struct{})
	var downloadSeen chan struct{}
	app := startHTTPApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/upload":
			h := sha256.New()
			if _, err := io.CopyN(h, r.Body, chunk); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			close(uploadSeen)
			n, _ := io.Copy(h, r.Body)
			fmt.Fprintf(w, "%d %x", n+chunk, h.Sum(nil))
		case "/download":
			rc := http.NewResponseController(w)
			_ = pattern(w, 2, streamSize, func(i int) {
				if i == 0 {
					_ = rc.Flush()
					if err := waitOrFail(downloadSeen, "the first downloaded chunk"); err != nil {
						panic(http.ErrAbortHandler)
					}
				}
			})
		}
	}))
	p := startPair(t, app.port, pairOptions{})
	for _, h2c := range []bool{false, true} {
		uploadSeen, downloadSeen = make(chan struct{}), make(chan struct{})
		name := map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[h2c]
		t.Run(name, func(t *testing.T) {
			client := httpClient(t, p.listen, h2c)

			pr, pw := io.Pipe()
			go func() {
				pw.CloseWithError(pattern(pw, 1, streamSize, func(i int) {
					if i == 0 {
						if err := waitOrFail(uploadSeen, "the first uploaded chunk"); err != nil {
							pw.CloseWithError(err)
						}
					}
				}))
			}()
			resp, err := client.Post(appURL(app.port, "/upload"), "application/octet-stream", pr)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := fmt.Sprintf("%d %x", streamSize, patternSum(1, streamSize)); string(got) != want {
				t.Errorf("upload: app saw %q, want %q", got, want)
			}

			resp, err = client.Get(appURL(app.port, "/download"))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			h := sha256.New()
			if _, err := io.CopyN(h, resp.Body, chunk); err != nil {
				t.Fatal(err)
			}
			close(downloadSeen)
			n, err := io.Copy(h, resp.Body)
			if err != nil || n+chunk != streamSize {
				t.Fatalf("download: %d bytes (%v)", n+chunk, err)
			}
			if want := patternSum(2, streamSize); string(h.Sum(nil)) != string(want[:]) {
				t.Error("download: body differs from what the app sent")
			}
		})
	}
}
