package tcptest

import (
	"io"
	"testing"
)

func TestPairCarriesBytesAndHalfClose(t *testing.T) {
	d, a := Pair(t)
	go func() {
		_, _ = d.Write([]byte("ping"))
		_ = d.CloseWrite()
	}()
	got, err := io.ReadAll(a)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "ping" {
		t.Fatalf("accepted end read %q, want %q", got, "ping")
	}
}
