// Package tcptest gives tests real loopback TCP connections, in the spirit of
// net/http/httptest: tests of conn wrappers, copying and detection should
// exercise the kernel's TCP (half-close, resets, splice), not net.Pipe.
package tcptest

import (
	"net"
	"sync"
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

// Serve accepts loopback TCP connections until the test ends and runs
// handle on each in its own goroutine, closing the connection when handle
// returns. It returns the address to dial. When the test ends, the
// listener and every connection still open are closed, and Serve's
// goroutines have returned before the cleanup does.
func Serve(tb testing.TB, handle func(net.Conn)) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var (
		mu     sync.Mutex
		conns  = map[net.Conn]struct{}{}
		closed bool
		wg     sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				_ = c.Close()
				return
			}
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					_ = c.Close()
				}()
				handle(c)
			})
		}
	})
	tb.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}
