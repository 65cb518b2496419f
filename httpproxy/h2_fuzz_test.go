package httpproxy

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Frames encodes frames as a client would send them after its preface,
// for the fuzz corpus.
func h2Frames(write func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer)) []byte {
	var out, hbuf bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	fr.AllowIllegalWrites = true
	write(fr, hpack.NewEncoder(&hbuf), &hbuf)
	return out.Bytes()
}

func getFrame(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer, id uint32, end bool) {
	hbuf.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "svc.example"}, {":path", "/"}, {"content-type", "application/grpc"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndStream: end, EndHeaders: true})
}

// Whatever a client sends after its preface, the relay neither crashes nor
// hangs: it answers, or ends the connection, and its goroutines end
// (TestMain checks for leaks).
func FuzzH2RelayClientFrames(f *testing.F) {
	f.Add(h2Frames(func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer) { getFrame(fr, enc, hbuf, 1, true) }))
	f.Add(h2Frames(func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer) {
		getFrame(fr, enc, hbuf, 1, false)
		_ = fr.WriteData(1, false, []byte("\x00\x00\x00\x00\x02hi"))
		_ = fr.WriteWindowUpdate(1, 1000)
		_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
		getFrame(fr, enc, hbuf, 3, false)
		_ = fr.WriteContinuation(3, true, []byte{0x82})
	}))
	f.Add(h2Frames(func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer) {
		_ = fr.WritePing(false, [8]byte{1})
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
	}))
	f.Add([]byte{0, 0, 0, 4, 1, 0, 0, 0, 0})

	up := h2cServer(f, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(w, r.Body) }), 0)
	f.Fuzz(func(t *testing.T, frames []byte) {
		rl := startH2Relay(t, up, Config{Direction: "inbound"})
		c, err := net.Dial("tcp", rl.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		var in bytes.Buffer
		in.WriteString(http2.ClientPreface)
		_ = http2.NewFramer(&in, nil).WriteSettings()
		in.Write(frames)
		_, _ = c.Write(in.Bytes())
		_ = c.(*net.TCPConn).CloseWrite()
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("the relay neither ended nor answered the connection: %v", err)
		}
	})
}
