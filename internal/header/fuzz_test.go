package header

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzRead feeds arbitrary streams to Read. Read must never panic, must map
// every error to a known reason, must consume exactly the announced frame when
// it succeeds, and what it accepts must survive re-encoding unchanged.
func FuzzRead(f *testing.F) {
	for _, h := range []Header{{Port: 80}, {Port: 8080, Name: "web", SessionProtocol: HTTP2}, {Port: 65535, SessionProtocol: HTTP1}} {
		b, _ := h.AppendBinary(nil)
		f.Add(b)
	}
	f.Add([]byte(Preface))
	f.Add(frame(nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		h, err := Read(r)
		if err != nil {
			switch Reason(err) {
			case "bad_preface", "too_long", "bad_port", "malformed", "truncated":
			default:
				t.Fatalf("Read error %v has reason %q", err, Reason(err))
			}
			if h != (Header{}) {
				t.Fatalf("Read returned %+v with error %v", h, err)
			}
			return
		}
		consumed := len(data) - r.Len()
		if consumed > prefixLen+MaxBodyLen {
			t.Fatalf("Read consumed %d bytes, more than a header can hold", consumed)
		}
		if announced := prefixLen + int(uint32(data[len(Preface)])<<24|uint32(data[len(Preface)+1])<<16|
			uint32(data[len(Preface)+2])<<8|uint32(data[len(Preface)+3])); consumed != announced {
			t.Fatalf("Read consumed %d bytes, the frame announced %d", consumed, announced)
		}
		b, err := h.AppendBinary(nil)
		if err != nil {
			t.Fatalf("Read accepted %+v but AppendBinary refuses it: %v", h, err)
		}
		h2, err := Read(bytes.NewReader(b))
		if err != nil || h2 != h {
			t.Fatalf("re-read = %+v, %v; want %+v", h2, err, h)
		}
	})
}

// FuzzRoundTrip encodes arbitrary headers: AppendBinary must refuse exactly
// the invalid ones, and Read must return every valid one unchanged.
func FuzzRoundTrip(f *testing.F) {
	f.Add(uint16(80), "", uint8(0))
	f.Add(uint16(8080), "web.default.svc.cluster.local", uint8(2))
	f.Add(uint16(0), "x", uint8(1))
	f.Add(uint16(1), "\xff", uint8(3))
	f.Fuzz(func(t *testing.T, port uint16, name string, proto uint8) {
		h := Header{Port: port, Name: name, SessionProtocol: SessionProtocol(proto)}
		b, err := h.AppendBinary(nil)
		if err != nil {
			if !errors.Is(err, ErrBadPort) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("AppendBinary(%+v) error %v is neither ErrBadPort nor ErrMalformed", h, err)
			}
			if h.validate() == nil {
				t.Fatalf("AppendBinary(%+v) refused a valid header: %v", h, err)
			}
			return
		}
		if len(b) > maxEncodedLen {
			t.Fatalf("encoding of %+v is %d bytes, more than maxEncodedLen %d", h, len(b), maxEncodedLen)
		}
		r := bytes.NewReader(append(b, "tail"...))
		got, err := Read(r)
		if err != nil || got != h {
			t.Fatalf("Read(AppendBinary(%+v)) = %+v, %v", h, got, err)
		}
		if r.Len() != len("tail") {
			t.Fatalf("Read left %d bytes, want 4", r.Len())
		}
	})
}
