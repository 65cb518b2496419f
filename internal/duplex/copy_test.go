package duplex

import (
	"bytes"
	"io"
	"testing"
)

// scriptedReader returns its chunks one Read at a time, recording the size of
// the buffer each Read was given.
type scriptedReader struct {
	chunks  [][]byte
	bufLens []int
}

func (r *scriptedReader) Read(p []byte) (int, error) {
	r.bufLens = append(r.bufLens, len(p))
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	if len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

func TestCopyBufferedHoldsPoolBufferOnlyDuringBursts(t *testing.T) {
	const small, big = idleBufferSize, DefaultBufferSize
	chunk := func(n int) []byte { return bytes.Repeat([]byte{byte(n)}, n) }
	tests := []struct {
		name   string
		chunks [][]byte
		want   []int // buffer size given to each Read, the final EOF read included
	}{
		{"ping-pong stays small", [][]byte{chunk(64), chunk(64), chunk(64)}, []int{small, small, small, small}},
		{"burst borrows, short read returns", [][]byte{chunk(small), chunk(big), chunk(big), chunk(100), chunk(10)},
			[]int{small, big, big, big, small, small}},
		{"TLS-record-sized reads keep the pool buffer", [][]byte{chunk(small), chunk(burstRead), chunk(burstRead), chunk(burstRead - 1), chunk(1)},
			[]int{small, big, big, big, small, small}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want bytes.Buffer
			for _, c := range tt.chunks {
				want.Write(c)
			}
			src := &scriptedReader{chunks: tt.chunks}
			var dst bytes.Buffer
			n, err := copyBuffered(&dst, src, NewBufferPool(0))
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(want.Len()) || !bytes.Equal(dst.Bytes(), want.Bytes()) {
				t.Fatalf("copied %d bytes (equal=%v), want %d", n, bytes.Equal(dst.Bytes(), want.Bytes()), want.Len())
			}
			if len(src.bufLens) != len(tt.want) {
				t.Fatalf("reads got buffers %v, want %v", src.bufLens, tt.want)
			}
			for i := range tt.want {
				if src.bufLens[i] != tt.want[i] {
					t.Fatalf("reads got buffers %v, want %v", src.bufLens, tt.want)
				}
			}
		})
	}
}
