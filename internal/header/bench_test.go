package header

import (
	"bytes"
	"io"
	"testing"
)

var benchHeader = Header{Port: 8080, Name: "web.default.svc.cluster.local", SessionProtocol: HTTP1}

func BenchmarkWrite(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if err := Write(io.Discard, benchHeader); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendBinary(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, maxEncodedLen)
	for b.Loop() {
		var err error
		if buf, err = benchHeader.AppendBinary(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRead(b *testing.B) {
	enc, err := benchHeader.AppendBinary(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(enc)))
	r := bytes.NewReader(enc)
	for b.Loop() {
		r.Reset(enc)
		if _, err := Read(r); err != nil {
			b.Fatal(err)
		}
	}
}
