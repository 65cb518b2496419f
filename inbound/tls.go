package inbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/seed722d2a70/meshproxy/identity"
	"github.com/seed722d2a70/meshproxy/internal/header"
)

// Handshake refusals that are not identity decisions.
var (
	// ErrPlaintext: the peer did not speak TLS on the inbound port.
	ErrPlaintext = errors.New("plaintext connection on the mTLS port")
	// ErrNoTransportHeader: the peer did not negotiate the transport
	// header protocol, so there is no port to forward to.
	ErrNoTransportHeader = errors.New("peer did not negotiate the transport header protocol")
	// ErrTLSVersion: the peer offered no TLS version the inbound port
	// accepts (TLS 1.3 only): an old client, or a proxy that is not ours.
	ErrTLSVersion = errors.New("peer offered no accepted TLS version")
	// ErrALPN: the peer offered ALPN protocols, none of them the transport
	// header's (e.g. only h2): a TLS client of the app's sent to 4143.
	ErrALPN = errors.New("peer offered no accepted ALPN protocol")
)

// errHandshakeTooLarge: the peer sent more than Config.MaxHandshakeBytes
// before its handshake completed.
var errHandshakeTooLarge = errors.New("handshake too large")

const reasonHandshakeTooLarge = "handshake_too_large"

// offered is what a peer's ClientHello offered, recorded during the
// handshake so that a failed one can be told apart by cause: crypto/tls
// reports a version or ALPN mismatch only as an unexported error string.
// pc, when not nil, is the connection's pending state, which the handshake
// moves to the header stage once the peer's chain is verified.
type offered struct {
	seen     bool
	versions []uint16
	protos   []string
	pc       *pendingConn
}

type offeredKey struct{}

// recordOffer notes the ClientHello in the *offered the handshake's context
// carries, and returns it.
func recordOffer(hello *tls.ClientHelloInfo) *offered {
	o, ok := hello.Context().Value(offeredKey{}).(*offered)
	if !ok {
		return nil
	}
	o.seen, o.versions, o.protos = true, hello.SupportedVersions, hello.SupportedProtos
	return o
}

// withVerified returns cfg for a handshake whose pending state is pc: a
// copy whose VerifyConnection, once cfg's own has accepted the peer, moves
// pc to the header stage, under the limiter's lock. The peer has then
// proven itself as far as its chain goes (its CertificateVerify and
// Finished come in the same flight), and must not be shed as the oldest
// of strangers. A GetConfigForClient's Config keeps the original's session
// ticket keys, so resumption is unaffected.
func withVerified(cfg *tls.Config, pc *pendingConn) *tls.Config {
	c := cfg.Clone()
	c.GetConfigForClient = nil
	verify := cfg.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if verify != nil {
			if err := verify(cs); err != nil {
				return err
			}
		}
		return pc.verified()
	}
	return c
}

// refusal returns the specific refusal behind a failed handshake in which
// the peer offered o to a server configured with cfg, or nil when its offer
// does not explain the failure.
func (o *offered) refusal(cfg *tls.Config) error {
	if !o.seen {
		return nil
	}
	maxVersion := cfg.MaxVersion
	if maxVersion == 0 {
		maxVersion = tls.VersionTLS13
	}
	if !slices.ContainsFunc(o.versions, func(v uint16) bool { return v >= cfg.MinVersion && v <= maxVersion }) {
		return ErrTLSVersion
	}
	// A peer offering no ALPN at all completes the handshake and is
	// refused afterwards as ErrNoTransportHeader.
	if len(o.protos) > 0 && !slices.ContainsFunc(o.protos, func(p string) bool { return slices.Contains(cfg.NextProtos, p) }) {
		return ErrALPN
	}
	return nil
}

// peer is the verified identity of the proxy at the other end.
type peer struct {
	ID     spiffeid.ID
	Chains [][]*x509.Certificate
}

// serverTLS returns base with the transport header's ALPN protocol added,
// recording each peer's offer for handshake and moving its pending state
// along (withVerified).
func serverTLS(base *tls.Config) *tls.Config {
	cfg := base.Clone()
	if !slices.Contains(cfg.NextProtos, header.ALPN) {
		cfg.NextProtos = append(cfg.NextProtos, header.ALPN)
	}
	next := base.GetConfigForClient
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		o := recordOffer(hello)
		var use *tls.Config
		if next != nil {
			c, err := next(hello)
			if err != nil {
				return nil, err
			}
			use = c
		}
		if o == nil || o.pc == nil {
			return use, nil
		}
		if use == nil {
			use = cfg
		}
		return withVerified(use, o.pc), nil
	}
	return cfg
}

// budgetConn fails reads past a byte budget, for the handshake: crypto/tls
// buffers a handshake message whole before verifying anything (up to 64
// KiB, 256 KiB for a Certificate), which the pending caps, counting
// connections, do not bound. left < 0 lifts the budget.
type budgetConn struct {
	net.Conn
	left, budget int
}

func (c *budgetConn) Read(b []byte) (int, error) {
	if c.left < 0 {
		return c.Conn.Read(b)
	}
	if c.left == 0 {
		return 0, fmt.Errorf("%w: the peer sent more than %d bytes before completing it", errHandshakeTooLarge, c.budget)
	}
	n, err := c.Conn.Read(b[:min(len(b), c.left)])
	c.left -= n
	return n, err
}

// Unwrap, CloseWrite and CloseRead reach the conn underneath, for
// unwrapTCP and half-closes.
func (c *budgetConn) Unwrap() net.Conn { return c.Conn }

func (c *budgetConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("%T: %w", c.Conn, errors.ErrUnsupported)
}

func (c *budgetConn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return fmt.Errorf("%T: %w", c.Conn, errors.ErrUnsupported)
}

// handshake completes the mTLS handshake within HandshakeTimeout. The TLS
// configuration verifies the peer's SVID against the trust bundle on every
// handshake, resumed or not; here we only read the result.
//
// A pending connection's memory is mostly what waits on it (see
// BenchmarkPendingHandshakeMemory), so until the peer's first byte arrives
// only a goroutine with a shallow stack waits, on the bare socket: no TLS
// state, no buffers, no timer. The deadline and shutdown go through the
// socket too, rather than HandshakeContext's cancelable context, which
// costs a second goroutine per handshake.
//
// Until the handshake completes the peer may send at most MaxHandshakeBytes
// (budgetConn); and once its chain is verified, its connection moves from
// the handshake stage of pending connections to the header stage (pc, nil
// when not counted).
func (p *Proxy) handshake(ctx context.Context, pc *pendingConn, conn net.Conn) (*tls.Conn, peer, error) {
	if err := conn.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout)); err != nil {
		return nil, peer{}, err
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	if err := awaitFirstByte(conn); err != nil {
		return nil, peer{}, fmt.Errorf("mTLS handshake: waiting for the ClientHello: %w", err)
	}
	pc.heard()
	offer := offered{pc: pc}
	// Without cancellation, Done is nil and crypto/tls starts no watcher.
	hctx := context.WithValue(context.WithoutCancel(ctx), offeredKey{}, &offer)
	budget := &budgetConn{Conn: conn, left: p.cfg.MaxHandshakeBytes, budget: p.cfg.MaxHandshakeBytes}
	tc := tls.Server(budget, p.tls)
	if err := tc.HandshakeContext(hctx); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		if errors.Is(err, errHandshakeTooLarge) || errors.Is(err, errShed) {
			return nil, peer{}, err
		}
		var rh tls.RecordHeaderError
		if errors.As(err, &rh) {
			return nil, peer{}, fmt.Errorf("%w: %w", ErrPlaintext, err)
		}
		if refusal := offer.refusal(p.tls); refusal != nil {
			return nil, peer{}, fmt.Errorf("%w: %w", refusal, err)
		}
		return nil, peer{}, fmt.Errorf("mTLS handshake: %w", err)
	}
	budget.left = -1 // read by this goroutine only, until the handshake returned
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, peer{}, err
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != header.ALPN {
		return tc, peer{}, ErrNoTransportHeader
	}
	id, err := identity.PeerID(cs)
	if err != nil {
		return tc, peer{}, err
	}
	return tc, peer{ID: id, Chains: [][]*x509.Certificate{cs.PeerCertificates}}, nil
}

// awaitFirstByte waits, within conn's read deadline, until conn has bytes
// to read (or is closed), without reading them. Connections that cannot
// tell (not sockets) return at once.
func awaitFirstByte(conn net.Conn) error {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var peekErr error
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			return false // wait until readable
		case err != nil:
			peekErr = err
		case n == 0:
			peekErr = io.EOF
		}
		return true
	})
	if err != nil {
		return err
	}
	return peekErr
}
