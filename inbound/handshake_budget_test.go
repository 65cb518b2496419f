package inbound

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/internal/header"
	"github.com/seed722d2a70/meshproxy/internal/testcert"
)

// budgetProxy serves an inbound proxy on loopback whose handshakes wait a
// minute, so that only the byte budget can end them early.
func budgetProxy(t testing.TB, perSource int) (*Proxy, *net.TCPAddr, *Metrics) {
	t.Helper()
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	cert := testcert.New(t, "inbound")
	p := New(Config{
		TLS:                 &tls.Config{Certificates: []tls.Certificate{cert.TLS}, ClientAuth: tls.RequireAnyClientCert, MinVersion: tls.VersionTLS13},
		HandshakeTimeout:    time.Minute,
		MaxPendingPerSource: perSource,
		Metrics:             m,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	t.Cleanup(func() {
		_ = p.Shutdown(context.Background())
		<-served
	})
	return p, ln.Addr().(*net.TCPAddr), m
}

// bigClientHello returns the start of a ClientHello announcing msgLen
// bytes, in records of at most 16 KiB: send bytes of it in all.
func bigClientHello(msgLen, send int) []byte {
	msg := make([]byte, send)
	msg[0] = 1 // client_hello
	msg[1], msg[2], msg[3] = byte(msgLen>>16), byte(msgLen>>8), byte(msgLen)
	var stream []byte
	for off := 0; off < len(msg); off += 16384 {
		end := min(off+16384, len(msg))
		stream = append(stream, 0x16, 0x03, 0x01, byte((end-off)>>8), byte(end-off))
		stream = append(stream, msg[off:end]...)
	}
	return stream
}

// A peer may send at most MaxHandshakeBytes before its handshake
// completes: crypto/tls would buffer a 64 KiB ClientHello or a 256 KiB
// Certificate message whole, per pending connection. Past the budget the
// connection is refused at once, as handshake_too_large; a chain of a few
// KiB, as SVIDs have, is not.
func TestHandshakeByteBudget(t *testing.T) {
	leaf := testcert.New(t, "client").TLS
	chain := func(n int) tls.Certificate {
		c := leaf
		c.Certificate = nil
		for range n {
			c.Certificate = append(c.Certificate, leaf.Certificate[0])
		}
		c.Leaf = nil
		return c
	}
	tests := []struct {
		name         string
		peer         func(c net.Conn) error
		wantTooLarge bool
	}{
		{
			name: "a ClientHello announcing 60 KiB, stalled after 40 KiB",
			peer: func(c net.Conn) error {
				_, err := c.Write(bigClientHello(60000, 40<<10))
				return err
			},
			wantTooLarge: true,
		},
		{
			name: "a client certificate chain of 80 certificates",
			peer: func(c net.Conn) error {
				return tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
					Certificates: []tls.Certificate{chain(80)}, NextProtos: []string{header.ALPN}}).Handshake()
			},
			wantTooLarge: true,
		},
		{
			name: "a client certificate chain of 4 certificates",
			peer: func(c net.Conn) error {
				return tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
					Certificates: []tls.Certificate{chain(4)}, NextProtos: []string{header.ALPN}}).Handshake()
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, addr, m := budgetProxy(t, 0)
			c, err := net.DialTCP("tcp", nil, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			herr := tt.peer(c)
			if !tt.wantTooLarge && herr != nil {
				t.Fatalf("handshake: %v", herr)
			}
			if tt.wantTooLarge {
				// The proxy closes: the peer is not left waiting for the
				// handshake timeout (a minute).
				_, err := io.Copy(io.Discard, c)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatal("the proxy did not close the connection")
				}
			}
			tooLarge := testutil.ToFloat64(m.tlsRefused.WithLabelValues(reasonHandshakeTooLarge))
			if want := map[bool]float64{true: 1}[tt.wantTooLarge]; tooLarge != want {
				t.Errorf("inbound_tls_refused_total{reason=handshake_too_large} = %v, want %v", tooLarge, want)
			}
		})
	}
}

// What a pending connection costs at worst: its peer has sent all the
// budget allows of a handshake message and stalls. The defaults are sized
// from this (config.DefaultMaxPending).
func TestPendingWorstCaseCost(t *testing.T) {
	const conns = 200
	p, addr, _ := budgetProxy(t, conns)
	stream := bigClientHello(60000, config.DefaultMaxHandshakeBytes-5*2)
	before := memNow()
	fds := make([]int, 0, conns)
	defer func() {
		for _, fd := range fds {
			_ = syscall.Close(fd)
		}
	}()
	for range conns {
		fd, err := rawConnect(addr)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
		if _, err := syscall.Write(fd, stream); err != nil {
			t.Fatal(err)
		}
	}
	waitPending(t, p, conns)
	time.Sleep(time.Second) // let the handshakes read what was sent
	after := memNow()
	per := float64((after.heap-before.heap)+(after.stack-before.stack)) / conns
	t.Logf("per pending connection at the %d-byte budget: heap %.1f KiB, stack %.1f KiB, total %.1f KiB; x%d = %.1f MiB",
		config.DefaultMaxHandshakeBytes, float64(after.heap-before.heap)/conns/1024, float64(after.stack-before.stack)/conns/1024,
		per/1024, config.DefaultMaxPending, per*config.DefaultMaxPending/(1<<20))
	if limit := 48 << 10; per > float64(limit) {
		t.Errorf("a pending connection costs %.1f KiB at worst, over the %d KiB config.DefaultMaxPending is sized for", per/1024, limit>>10)
	}
}
