package detect

import (
	"bytes"
	"crypto/tls"
	"errors"
	"slices"
	"strings"
	"testing"
)

// helloBuilder assembles synthetic ClientHello records, for the cases a real
// TLS client never produces.
type helloBuilder struct {
	version uint16 // legacy_version; 0x0303 if zero
	suites  []byte // cipher suites; one suite if nil
	comp    []byte // compression methods; null if nil
	exts    [][]byte
	noExts  bool // omit the extensions block
}

func u16(n int) []byte { return []byte{byte(n >> 8), byte(n)} }

func ext(typ int, data []byte) []byte {
	return slices.Concat(u16(typ), u16(len(data)), data)
}

func sniExt(names ...string) []byte {
	var list []byte
	for _, n := range names {
		list = slices.Concat(list, []byte{serverNameTypeHostName}, u16(len(n)), []byte(n))
	}
	return ext(extensionServerName, slices.Concat(u16(len(list)), list))
}

func alpnExt(names ...string) []byte {
	var list []byte
	for _, n := range names {
		list = slices.Concat(list, []byte{byte(len(n))}, []byte(n))
	}
	return ext(extensionALPN, slices.Concat(u16(len(list)), list))
}

// body returns the ClientHello message body.
func (h helloBuilder) body() []byte {
	v := h.version
	if v == 0 {
		v = 0x0303
	}
	suites := h.suites
	if suites == nil {
		suites = []byte{0x13, 0x01}
	}
	comp := h.comp
	if comp == nil {
		comp = []byte{0}
	}
	b := slices.Concat(u16(int(v)), make([]byte, 32), []byte{0}, u16(len(suites)), suites, []byte{byte(len(comp))}, comp)
	if !h.noExts {
		exts := slices.Concat(h.exts...)
		b = slices.Concat(b, u16(len(exts)), exts)
	}
	return b
}

// record returns the ClientHello as one TLS record.
func (h helloBuilder) record() []byte { return wrapHello(h.body()) }

// wrapHello frames a ClientHello body as a handshake message in one record.
func wrapHello(body []byte) []byte {
	msg := slices.Concat([]byte{handshakeTypeHello, byte(len(body) >> 16)}, u16(len(body)), body)
	return slices.Concat([]byte{recordTypeHandshake, 3, 1}, u16(len(msg)), msg)
}

// fragment re-frames the handshake bytes of a single-record ClientHello into
// records of at most size payload bytes.
func fragment(record []byte, size int) []byte {
	hs := record[recordHeaderLen:]
	var out []byte
	for len(hs) > 0 {
		n := min(size, len(hs))
		out = slices.Concat(out, []byte{recordTypeHandshake, 3, 1}, u16(n), hs[:n])
		hs = hs[n:]
	}
	return out
}

func TestParseClientHelloFromCryptoTLS(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      *tls.Config
		wantSNI  string
		wantALPN []string
	}{
		{"TLS 1.3 with SNI and ALPN", &tls.Config{ServerName: "Api.Example.COM.", NextProtos: []string{"h2", "http/1.1"}}, "api.example.com", []string{"h2", "http/1.1"}},
		{"TLS 1.2 only", &tls.Config{ServerName: "db.internal", MaxVersion: tls.VersionTLS12}, "db.internal", nil},
		{"IP address sends no SNI", &tls.Config{ServerName: "127.0.0.1", NextProtos: []string{"grpc-exp"}}, "", []string{"grpc-exp"}},
		{"no server name", &tls.Config{InsecureSkipVerify: true}, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := captureClientHello(t, tc.cfg)
			for _, in := range [][]byte{rec, fragment(rec, 100), fragment(rec, 1), append(slices.Clip(rec), "\x14\x03\x03\x00\x01\x01early"...)} {
				hello, err := parseClientHello(in)
				if err != nil {
					t.Fatalf("parseClientHello: %v", err)
				}
				if hello.serverName != tc.wantSNI || !slices.Equal(hello.alpn, tc.wantALPN) {
					t.Fatalf("got SNI %q ALPN %q, want %q %q", hello.serverName, hello.alpn, tc.wantSNI, tc.wantALPN)
				}
			}
		})
	}
}

// TestParseClientHelloPrefixes checks that every proper prefix of a valid
// ClientHello asks for more bytes rather than being judged malformed.
func TestParseClientHelloPrefixes(t *testing.T) {
	rec := captureClientHello(t, &tls.Config{ServerName: "example.com", NextProtos: []string{"h2"}})
	for _, in := range [][]byte{rec, fragment(rec, 50)} {
		for k := range len(in) {
			if _, err := parseClientHello(in[:k]); err != errIncomplete {
				t.Fatalf("prefix of %d/%d bytes: err = %v, want errIncomplete", k, len(in), err)
			}
		}
	}
}

func TestParseClientHelloSynthetic(t *testing.T) {
	manyALPN := make([]string, 40)
	for i := range manyALPN {
		manyALPN[i] = strings.Repeat("p", i+1)
	}
	for _, tc := range []struct {
		name     string
		in       []byte
		wantErr  error
		wantSNI  string
		wantALPN []string
	}{
		{"minimal, no extensions", helloBuilder{noExts: true}.record(), nil, "", nil},
		{"empty extensions", helloBuilder{}.record(), nil, "", nil},
		{"SNI and ALPN", helloBuilder{exts: [][]byte{ext(0x0a0a, nil), sniExt("example.com"), alpnExt("h2")}}.record(), nil, "example.com", []string{"h2"}},
		{"first host name wins", helloBuilder{exts: [][]byte{sniExt("a.example", "b.example")}}.record(), nil, "a.example", nil},
		{"invalid host name not reported", helloBuilder{exts: [][]byte{sniExt("bad name\x00")}}.record(), nil, "", nil},
		{"too long host name not reported", helloBuilder{exts: [][]byte{sniExt(strings.Repeat("a", 254))}}.record(), nil, "", nil},
		{"lone dot not reported", helloBuilder{exts: [][]byte{sniExt(".")}}.record(), nil, "", nil},
		{"ALPN capped", helloBuilder{exts: [][]byte{alpnExt(manyALPN...)}}.record(), nil, "", manyALPN[:maxALPN]},

		{"not handshake", []byte("\x17\x03\x03\x00\x05hello"), errMalformed, "", nil},
		{"SSLv2 style", []byte("\x80\x2e\x01\x03\x01"), errMalformed, "", nil},
		{"bad record major version", []byte("\x16\x02"), errMalformed, "", nil},
		{"bad record minor version", []byte("\x16\x03\x05"), errMalformed, "", nil},
		{"empty record", []byte("\x16\x03\x01\x00\x00"), errMalformed, "", nil},
		{"record too long", []byte("\x16\x03\x01\x40\x01\x01"), errMalformed, "", nil},
		{"server hello", []byte("\x16\x03\x03\x00\x04\x02\x00\x00\x00"), errMalformed, "", nil},
		{"message too long", []byte("\x16\x03\x01\x00\x04\x01\x01\x00\x01"), errMalformed, "", nil},
		{"empty body", []byte("\x16\x03\x01\x00\x04\x01\x00\x00\x00"), errMalformed, "", nil},
		{"bad legacy version", helloBuilder{version: 0x0203}.record(), errMalformed, "", nil},
		{"odd cipher suites", helloBuilder{suites: []byte{1, 2, 3}}.record(), errMalformed, "", nil},
		{"no cipher suites", helloBuilder{suites: []byte{}}.record(), errMalformed, "", nil},
		{"no compression methods", helloBuilder{comp: []byte{}}.record(), errMalformed, "", nil},
		{"trailing bytes after extensions", wrapHello(append(helloBuilder{}.body(), 0)), errMalformed, "", nil},
		{"extension overruns", wrapHello(slices.Concat(helloBuilder{noExts: true}.body(), u16(4), u16(0), u16(9))), errMalformed, "", nil},
		{"duplicate SNI", helloBuilder{exts: [][]byte{sniExt("a"), sniExt("b")}}.record(), errMalformed, "", nil},
		{"duplicate ALPN", helloBuilder{exts: [][]byte{alpnExt("h2"), alpnExt("h2")}}.record(), errMalformed, "", nil},
		{"empty SNI list", helloBuilder{exts: [][]byte{ext(extensionServerName, u16(0))}}.record(), errMalformed, "", nil},
		{"empty host name", helloBuilder{exts: [][]byte{sniExt("")}}.record(), errMalformed, "", nil},
		{"SNI with trailing data", helloBuilder{exts: [][]byte{ext(extensionServerName, slices.Concat(u16(4), []byte{0}, u16(1), []byte("a"), []byte{9}))}}.record(), errMalformed, "", nil},
		{"empty ALPN list", helloBuilder{exts: [][]byte{ext(extensionALPN, u16(0))}}.record(), errMalformed, "", nil},
		{"empty ALPN name", helloBuilder{exts: [][]byte{alpnExt("h2", "")}}.record(), errMalformed, "", nil},
		{"fragment of other type", slices.Concat(fragment(helloBuilder{}.record(), 10)[:15], []byte("\x15\x03\x03\x00\x02\x02\x28")), errMalformed, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hello, err := parseClientHello(tc.in)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if hello.serverName != tc.wantSNI || !slices.Equal(hello.alpn, tc.wantALPN) {
				t.Fatalf("got SNI %q ALPN %q, want %q %q", hello.serverName, hello.alpn, tc.wantSNI, tc.wantALPN)
			}
		})
	}
}

// TestParseClientHelloDoesNotAlias checks that the results survive the
// input buffer being reused, as the pooled detection buffer is.
func TestParseClientHelloDoesNotAlias(t *testing.T) {
	in := helloBuilder{exts: [][]byte{sniExt("example.com"), alpnExt("h2")}}.record()
	hello, err := parseClientHello(in)
	if err != nil {
		t.Fatal(err)
	}
	copy(in, bytes.Repeat([]byte{'X'}, len(in)))
	if hello.serverName != "example.com" || hello.alpn[0] != "h2" {
		t.Fatalf("results changed with the input: %q %q", hello.serverName, hello.alpn)
	}
}
