// Package tcptest gives tests real loopback TCP connections, in the spirit of
// net/http/httptest: tests of conn wrappers, copying and detection should
// exercise the kernel's TCP (half-close, resets, splice), not net.Pipe.
package tcptest

import (
	"net"
	"testing"
)

// Pair returns the two ends of a fresh loopback TCP connection: the end that
// dialed and the end that was accepted. Both are closed when the test ends.
func Pair(tb testing.TB) (dialed, accepted *net.TCPConn) {
	tb.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		c   *net.TCPConn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := ln.AcceptTCP()
		ch <- result{c, err}
	}()
	dialed, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		tb.Fatal(err)
	}
	res := <-ch
	if res.err != nil {
		_ = dialed.Close()
		tb.Fatal(res.err)
	}
	tb.Cleanup(func() {
		_ = dialed.Close()
		_ = res.c.Close()
	})
	return dialed, res.c
}
