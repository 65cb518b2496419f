package detect

import (
	"crypto/tls"
	"io"
	"net"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// captureClientHello runs a real crypto/tls client handshake against a peer
// that only listens, and returns the first TLS record it sent: the
// ClientHello.
func captureClientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tls.Client(client, cfg).Handshake() // fails when server closes
	}()
	defer func() {
		server.Close()
		client.Close()
		<-done
	}()
	header := make([]byte, 5)
	if _, err := io.ReadFull(server, header); err != nil {
		t.Fatal(err)
	}
	record := make([]byte, 5+(int(header[3])<<8|int(header[4])))
	copy(record, header)
	if _, err := io.ReadFull(server, record[5:]); err != nil {
		t.Fatal(err)
	}
	return record
}

// writeAsync writes chunks to c in order from a new goroutine; the returned
// channel yields the first write error (or nil) once all are written.
func writeAsync(c net.Conn, chunks ...[]byte) <-chan error {
	errc := make(chan error, 1)
	go func() {
		for _, b := range chunks {
			if _, err := c.Write(b); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	return errc
}

// byteChunks splits b into one-byte chunks.
func byteChunks(b []byte) [][]byte {
	chunks := make([][]byte, len(b))
	for i := range b {
		chunks[i] = b[i : i+1]
	}
	return chunks
}
