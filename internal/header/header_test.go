package header

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"google.golang.org/protobuf/encoding/protowire"
)

// frame builds a raw frame around body, with the right length.
func frame(body []byte) []byte {
	b := append([]byte(Preface), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(b[len(Preface):], uint32(len(body)))
	return append(b, body...)
}

// pb concatenates protobuf fragments built with the protowire helpers.
func pb(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func tag(num protowire.Number, typ protowire.Type) []byte {
	return protowire.AppendTag(nil, num, typ)
}

func varint(v uint64) []byte { return protowire.AppendVarint(nil, v) }

func lenDelim(v []byte) []byte { return protowire.AppendBytes(nil, v) }

// negOne is the int32 -1 as a protobuf varint: sign-extended to 64 bits.
var negOne = func() uint64 { v := int64(-1); return uint64(v) }()

func portField(v uint64) []byte { return pb(tag(1, protowire.VarintType), varint(v)) }

func TestRoundTrip(t *testing.T) {
	tests := []Header{
		{Port: 1},
		{Port: 65535},
		{Port: 8080, Name: "web.default.svc.cluster.local"},
		{Port: 80, SessionProtocol: HTTP1},
		{Port: 443, SessionProtocol: HTTP2, Name: "h2"},
		{Port: 9000, Name: strings.Repeat("n", MaxNameLen), SessionProtocol: HTTP2},
		{Port: 127, Name: "ünïcødé"},
	}
	for _, want := range tests {
		b, err := want.AppendBinary([]byte("keep"))
		if err != nil {
			t.Fatalf("AppendBinary(%+v): %v", want, err)
		}
		if !bytes.HasPrefix(b, []byte("keep"+Preface)) {
			t.Fatalf("AppendBinary(%+v) did not append after the existing bytes: %q", want, b)
		}
		if len(b)-4 > maxEncodedLen {
			t.Errorf("AppendBinary(%+v) is %d bytes, more than maxEncodedLen %d", want, len(b)-4, maxEncodedLen)
		}
		const app = "application bytes"
		r := bytes.NewReader(append(b[4:], app...))
		got, err := Read(r)
		if err != nil {
			t.Fatalf("Read(%+v): %v", want, err)
		}
		if got != want {
			t.Errorf("Read = %+v, want %+v", got, want)
		}
		rest, _ := io.ReadAll(r)
		if string(rest) != app {
			t.Errorf("after Read the stream holds %q, want %q", rest, app)
		}
	}
}

// TestEncoding pins the exact bytes, so that the encoding cannot drift from
// docs/transport-header.md.
func TestEncoding(t *testing.T) {
	b, err := Header{Port: 8080, Name: "web", SessionProtocol: HTTP2}.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Preface + "\x00\x00\x00\x0c" + "\x08\x90\x3f" + "\x12\x03web" + "\x1a\x02\x12\x00"
	if string(b) != want {
		t.Errorf("encoding = %q\nwant       %q", b, want)
	}
}

func TestAppendBinaryRefuses(t *testing.T) {
	tests := []struct {
		h    Header
		want error
	}{
		{Header{}, ErrBadPort},
		{Header{Port: 0, Name: "x"}, ErrBadPort},
		{Header{Port: 1, Name: strings.Repeat("n", MaxNameLen+1)}, ErrMalformed},
		{Header{Port: 1, Name: "bad\xffutf8"}, ErrMalformed},
		{Header{Port: 1, SessionProtocol: HTTP2 + 1}, ErrMalformed},
	}
	for _, tt := range tests {
		b, err := tt.h.AppendBinary([]byte("x"))
		if !errors.Is(err, tt.want) {
			t.Errorf("AppendBinary(%+v) error = %v, want %v", tt.h, err, tt.want)
		}
		if string(b) != "x" {
			t.Errorf("AppendBinary(%+v) changed the buffer to %q on error", tt.h, b)
		}
		var w bytes.Buffer
		if err := Write(&w, tt.h); !errors.Is(err, tt.want) || w.Len() != 0 {
			t.Errorf("Write(%+v) = %v and wrote %d bytes, want %v and nothing", tt.h, err, w.Len(), tt.want)
		}
	}
}

func TestRead(t *testing.T) {
	http1 := pb(tag(3, protowire.BytesType), lenDelim(pb(tag(1, protowire.BytesType), lenDelim(nil))))
	http2 := pb(tag(3, protowire.BytesType), lenDelim(pb(tag(2, protowire.BytesType), lenDelim(nil))))
	name := func(s string) []byte { return pb(tag(2, protowire.BytesType), lenDelim([]byte(s))) }
	group := func(num protowire.Number, inner ...[]byte) []byte {
		return pb(tag(num, protowire.StartGroupType), pb(inner...), tag(num, protowire.EndGroupType))
	}
	unknowns := pb(
		tag(99, protowire.VarintType), varint(1<<40),
		tag(4, protowire.Fixed32Type), []byte{1, 2, 3, 4},
		tag(5, protowire.Fixed64Type), []byte{1, 2, 3, 4, 5, 6, 7, 8},
		tag(6, protowire.BytesType), lenDelim([]byte("later")),
		group(7, tag(1, protowire.VarintType), varint(3)),
	)
	filler := func(n int) []byte { return pb(tag(15, protowire.BytesType), lenDelim(make([]byte, n))) }

	tests := []struct {
		name    string
		in      []byte
		want    Header
		wantErr error
	}{
		{name: "port only", in: frame(portField(80)), want: Header{Port: 80}},
		{name: "all fields", in: frame(pb(portField(443), name("api"), http2)), want: Header{Port: 443, Name: "api", SessionProtocol: HTTP2}},
		{name: "fields in any order", in: frame(pb(http1, name("api"), portField(443))), want: Header{Port: 443, Name: "api", SessionProtocol: HTTP1}},
		{name: "unknown fields skipped", in: frame(pb(unknowns, portField(80), unknowns)), want: Header{Port: 80}},
		{name: "unknown fields in session_protocol", in: frame(pb(portField(80), tag(3, protowire.BytesType),
			lenDelim(pb(tag(9, protowire.VarintType), varint(1), tag(2, protowire.BytesType), lenDelim(unknowns))))),
			want: Header{Port: 80, SessionProtocol: HTTP2}},
		{name: "last port wins", in: frame(pb(portField(1), portField(2))), want: Header{Port: 2}},
		{name: "last kind wins", in: frame(pb(portField(1), tag(3, protowire.BytesType),
			lenDelim(pb(tag(2, protowire.BytesType), lenDelim(nil), tag(1, protowire.BytesType), lenDelim(nil))))),
			want: Header{Port: 1, SessionProtocol: HTTP1}},
		{name: "empty session_protocol keeps earlier", in: frame(pb(portField(1), http2, tag(3, protowire.BytesType), lenDelim(nil))),
			want: Header{Port: 1, SessionProtocol: HTTP2}},
		{name: "empty session_protocol", in: frame(pb(portField(1), tag(3, protowire.BytesType), lenDelim(nil))), want: Header{Port: 1}},
		{name: "non-minimal varint", in: frame(pb(tag(1, protowire.VarintType), []byte{0xd0, 0x80, 0x80, 0x00})), want: Header{Port: 80}},
		{name: "body at the limit", in: frame(pb(portField(80), filler(MaxBodyLen-5))), want: Header{Port: 80}},
		{name: "name at the limit", in: frame(pb(portField(80), name(strings.Repeat("a", MaxNameLen)))), want: Header{Port: 80, Name: strings.Repeat("a", MaxNameLen)}},

		{name: "not a header", in: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n...."), wantErr: ErrBadPreface},
		{name: "empty stream", in: nil, wantErr: io.EOF},
		{name: "wrong version", in: append([]byte("transport.meshproxy.io/v2\r\n\r\n"), frame(portField(80))[len(Preface):]...), wantErr: ErrBadPreface},
		{name: "short garbage", in: []byte("tls"), wantErr: ErrBadPreface},
		{name: "too long by one", in: frame(pb(portField(80), filler(MaxBodyLen-4))), wantErr: ErrTooLong},
		{name: "length 2^32-1 without body", in: append([]byte(Preface), 0xff, 0xff, 0xff, 0xff), wantErr: ErrTooLong},

		{name: "empty body", in: frame(nil), wantErr: ErrBadPort},
		{name: "port 0", in: frame(portField(0)), wantErr: ErrBadPort},
		{name: "port 65536", in: frame(portField(65536)), wantErr: ErrBadPort},
		{name: "port negative int32", in: frame(portField(negOne)), wantErr: ErrBadPort},
		{name: "port above 32 bits", in: frame(portField(1<<32 + 80)), wantErr: ErrBadPort},
		{name: "last port 0 wins", in: frame(pb(portField(80), portField(0))), wantErr: ErrBadPort},

		{name: "port as bytes", in: frame(pb(tag(1, protowire.BytesType), lenDelim([]byte{80}))), wantErr: ErrMalformed},
		{name: "port as fixed32", in: frame(pb(tag(1, protowire.Fixed32Type), []byte{80, 0, 0, 0})), wantErr: ErrMalformed},
		{name: "name as varint", in: frame(pb(portField(80), tag(2, protowire.VarintType), varint(1))), wantErr: ErrMalformed},
		{name: "session_protocol as varint", in: frame(pb(portField(80), tag(3, protowire.VarintType), varint(2))), wantErr: ErrMalformed},
		{name: "http1 as varint", in: frame(pb(portField(80), tag(3, protowire.BytesType), lenDelim(pb(tag(1, protowire.VarintType), varint(0))))), wantErr: ErrMalformed},
		{name: "http2 content broken", in: frame(pb(portField(80), tag(3, protowire.BytesType), lenDelim(pb(tag(2, protowire.BytesType), lenDelim([]byte{0x08}))))), wantErr: ErrMalformed},
		{name: "session_protocol content broken", in: frame(pb(portField(80), tag(3, protowire.BytesType), lenDelim([]byte{0x0a, 0x05}))), wantErr: ErrMalformed},
		{name: "name not UTF-8", in: frame(pb(portField(80), name("\xc3\x28"))), wantErr: ErrMalformed},
		{name: "name too long", in: frame(pb(portField(80), name(strings.Repeat("a", MaxNameLen+1)))), wantErr: ErrMalformed},
		{name: "truncated varint in body", in: frame(pb(tag(1, protowire.VarintType), []byte{0x80})), wantErr: ErrMalformed},
		{name: "bytes longer than body", in: frame(pb(portField(80), tag(2, protowire.BytesType), varint(10), []byte("abc"))), wantErr: ErrMalformed},
		{name: "field number 0", in: frame(pb(portField(80), []byte{0x00, 0x00})), wantErr: ErrMalformed},
		{name: "stray end group", in: frame(pb(portField(80), tag(8, protowire.EndGroupType))), wantErr: ErrMalformed},
		{name: "unterminated group", in: frame(pb(portField(80), tag(8, protowire.StartGroupType))), wantErr: ErrMalformed},
		{name: "reserved wire type", in: frame(pb(portField(80), []byte{8<<3 | 6})), wantErr: ErrMalformed},
		{name: "overlong varint", in: frame(pb(tag(1, protowire.VarintType), bytes.Repeat([]byte{0xff}, 11))), wantErr: ErrMalformed},
	}
	if n := len(pb(portField(80), filler(MaxBodyLen-5))); n != MaxBodyLen {
		t.Fatalf("the body-at-the-limit case is %d bytes, want %d", n, MaxBodyLen)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Read(bytes.NewReader(tt.in))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Read error = %v, want %v", err, tt.wantErr)
				}
				if got != (Header{}) {
					t.Errorf("Read returned %+v with an error, want the zero Header", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if got != tt.want {
				t.Errorf("Read = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestReadTruncated cuts a valid header at every byte offset.
func TestReadTruncated(t *testing.T) {
	full, err := Header{Port: 8080, Name: "svc", SessionProtocol: HTTP1}.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(full) {
		_, err := Read(bytes.NewReader(full[:n]))
		want := io.ErrUnexpectedEOF
		if n == 0 {
			want = io.EOF
		}
		if !errors.Is(err, want) {
			t.Errorf("Read(first %d of %d bytes) error = %v, want %v", n, len(full), err, want)
		}
		if got := Reason(err); got != "truncated" {
			t.Errorf("Reason(Read(first %d bytes)) = %q, want truncated", n, got)
		}
	}
}

// TestReadExactly checks that Read consumes the header and not one byte more,
// whatever sizes the reader returns.
func TestReadExactly(t *testing.T) {
	full, err := Header{Port: 5432, Name: "db"}.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	const app = "\x00app bytes that must stay unread"
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
	}
	for name, wrap := range readers {
		src := strings.NewReader(string(full) + app)
		got, err := Read(wrap(src))
		if err != nil {
			t.Fatalf("%s: Read: %v", name, err)
		}
		if got.Port != 5432 || got.Name != "db" {
			t.Errorf("%s: Read = %+v", name, got)
		}
		if src.Len() != len(app) {
			t.Errorf("%s: Read left %d bytes unread, want %d", name, src.Len(), len(app))
		}
	}
}

// TestReadTooLongReadsNoBody checks that an oversized length is refused before
// any body byte is read or any room is made for it.
func TestReadTooLongReadsNoBody(t *testing.T) {
	prefix := append([]byte(Preface), 0x7f, 0xff, 0xff, 0xff)
	r := io.MultiReader(bytes.NewReader(prefix), iotest.ErrReader(errors.New("read past the length")))
	if _, err := Read(r); !errors.Is(err, ErrTooLong) {
		t.Fatalf("Read error = %v, want ErrTooLong", err)
	}
	const runs = 100
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		_, _ = Read(bytes.NewReader(prefix))
	}
	runtime.ReadMemStats(&after)
	if perRead := (after.TotalAlloc - before.TotalAlloc) / runs; perRead >= MaxBodyLen {
		t.Errorf("Read of an oversized header allocated %d bytes, want less than %d", perRead, MaxBodyLen)
	}
}

func TestReadIOError(t *testing.T) {
	boom := errors.New("connection reset")
	good, _ := Header{Port: 1}.AppendBinary(nil)
	for _, n := range []int{0, 10, len(Preface), len(good) - 1} {
		_, err := Read(io.MultiReader(bytes.NewReader(good[:n]), iotest.ErrReader(boom)))
		if !errors.Is(err, boom) {
			t.Errorf("after %d bytes: Read error = %v, want %v", n, err, boom)
		}
		if got := Reason(err); got != "io" {
			t.Errorf("after %d bytes: Reason = %q, want io", n, got)
		}
	}
}

// countingWriter counts Write calls.
type countingWriter struct {
	bytes.Buffer
	calls int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.calls++
	return w.Buffer.Write(p)
}

func TestWriteIsOneCall(t *testing.T) {
	var w countingWriter
	h := Header{Port: 8080, Name: strings.Repeat("n", MaxNameLen), SessionProtocol: HTTP2}
	if err := Write(&w, h); err != nil {
		t.Fatal(err)
	}
	if w.calls != 1 {
		t.Errorf("Write made %d Write calls, want 1", w.calls)
	}
	got, err := Read(&w.Buffer)
	if err != nil || got != h {
		t.Errorf("Read(Write(h)) = %+v, %v; want %+v", got, err, h)
	}
}

func TestWriteError(t *testing.T) {
	boom := errors.New("broken pipe")
	err := Write(errWriter{boom}, Header{Port: 1})
	if !errors.Is(err, boom) {
		t.Errorf("Write error = %v, want %v", err, boom)
	}
}

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

func TestReason(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{ErrBadPreface, "bad_preface"},
		{ErrTooLong, "too_long"},
		{ErrBadPort, "bad_port"},
		{ErrMalformed, "malformed"},
		{io.ErrUnexpectedEOF, "truncated"},
		{io.EOF, "truncated"},
		{errors.New("i/o timeout"), "io"},
	}
	for _, tt := range tests {
		if got := Reason(tt.err); got != tt.want {
			t.Errorf("Reason(%v) = %q, want %q", tt.err, got, tt.want)
		}
		if tt.err != nil {
			if got := Reason(errors.Join(errors.New("context"), tt.err)); got != tt.want {
				t.Errorf("Reason(wrapped %v) = %q, want %q", tt.err, got, tt.want)
			}
		}
	}
}

func TestSessionProtocolString(t *testing.T) {
	for p, want := range map[SessionProtocol]string{None: "none", HTTP1: "http1", HTTP2: "http2", 7: "invalid"} {
		if got := p.String(); got != want {
			t.Errorf("SessionProtocol(%d).String() = %q, want %q", p, got, want)
		}
	}
}
