package test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
)

// A hundred concurrent connections, each sending 1 MiB and half-closing,
// get every byte back, in order, through both proxies.
func TestHundredConcurrentConnectionsEveryByteVerified(t *testing.T) {
	p := startPair(t, echoApp(t), pairOptions{})
	const conns, size = 100, 1 << 20
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for range conns {
		wg.Go(func() {
			if err := echoRoundTrip(p.listen, size); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// echoRoundTrip sends size random bytes, half-closes, and checks that the
// echo that comes back, up to EOF, is exactly what was sent.
func echoRoundTrip(addr string, size int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		return err
	}
	sent := sha256.Sum256(data)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	if n != int64(size) || !bytes.Equal(h.Sum(nil), sent[:]) {
		return fmt.Errorf("echo differs from what was sent: %d bytes back of %d", n, size)
	}
	return nil
}
