package detect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Defaults for Config's zero values.
const (
	// DefaultTimeout is how long detection waits for the client, as in
	// Linkerd.
	DefaultTimeout = 10 * time.Second
	// DefaultBufferSize bounds how many bytes detection reads; a request
	// line longer than this is treated as opaque.
	DefaultBufferSize = 8 << 10
	// MinBufferSize is the smallest buffer a Detector uses: room for the
	// HTTP/2 preface and a short request line.
	MinBufferSize = 64
)

// Directions, the values of the direction metric label.
const (
	Inbound  = "inbound"
	Outbound = "outbound"
)

// Config configures a Detector. The zero Config is usable.
type Config struct {
	// Timeout bounds how long Detect waits for bytes that settle the
	// protocol; zero or less means DefaultTimeout.
	Timeout time.Duration
	// BufferSize bounds how many bytes Detect reads; zero or less means
	// DefaultBufferSize, and smaller values are raised to MinBufferSize.
	BufferSize int
	// Direction labels metrics and logs: Inbound or Outbound.
	Direction string
	// Metrics, if not nil, records every detection.
	Metrics *Metrics
	// Logger, if not nil, receives the timeout message.
	Logger *zap.Logger
}

// Detector detects the protocol of connections. It is safe for concurrent
// use; one Detector per listener shares its buffer pool across that
// listener's connections.
//
// Its settings are fixed by New because the buffer pool and the resolved
// metric series are derived from them.
type Detector struct {
	timeout    time.Duration
	bufferSize int
	direction  string
	logger     *zap.Logger
	metrics    *directionMetrics
	// timeoutMsg is the timeout log message, built once. Its wording
	// matches Linkerd's, which operators search for.
	timeoutMsg string
	// pool holds *[]byte of bufferSize bytes, so that steady-state
	// detection allocates no buffers.
	pool sync.Pool
	// watchers and hellos keep what detections share so that each
	// allocates nothing of its own: cancellation registrations, and the
	// names ClientHellos carry.
	watchers watchers
	hellos   interner
}

// New returns a Detector for c.
func New(c Config) *Detector {
	d := &Detector{
		timeout:    c.Timeout,
		bufferSize: c.BufferSize,
		direction:  c.Direction,
		logger:     c.Logger,
		metrics:    c.Metrics.forDirection(c.Direction),
	}
	if d.timeout <= 0 {
		d.timeout = DefaultTimeout
	}
	if d.bufferSize <= 0 {
		d.bufferSize = DefaultBufferSize
	}
	d.bufferSize = max(d.bufferSize, MinBufferSize)
	if d.logger == nil {
		d.logger = zap.NewNop()
	}
	d.timeoutMsg = "protocol detection timed out after " + d.timeout.String()
	size := d.bufferSize
	d.pool.New = func() any {
		b := make([]byte, size)
		return &b
	}
	return d
}

// Timeout returns how long Detect waits at most.
func (d *Detector) Timeout() time.Duration { return d.timeout }

// Detect reads the first bytes conn's client sends, until they settle the
// protocol, the buffer is full, the client closes or fails, or the timeout
// passes, and returns what it found together with the connection to use from
// now on, which replays every byte read. That connection is conn itself when
// there is nothing to replay (no byte and no end of stream was read), and a
// *Conn otherwise.
//
// Detect decides as early as the bytes allow: a byte that cannot start HTTP
// ends it at once, a complete request line or HTTP/2 preface ends it as HTTP.
// When the first bytes are a TLS handshake record it keeps reading while they
// are a valid but incomplete ClientHello (clients send the ClientHello whole,
// so this costs no waiting) to report SNI and ALPN.
//
// A timeout, an end of stream or a read error is not an error of Detect: the
// connection is opaque, and an end of stream or read error is replayed to
// the next reader after the peeked bytes, so a client's half-close reaches
// the server. A connection that failed before sending anything (a reset, for
// instance) is therefore OutcomeEmpty with a nil error, and the failure
// surfaces on its first read like on any other connection. Detect returns an
// error only when ctx is done first (such detections are not counted in the
// metrics); the returned connection then still replays what was read, and
// the caller will usually close it.
//
// Buffers come from the Detector's pool, detections under the same
// cancelable ctx share one registration with it, and a ClientHello's names
// seen before are reused, so a detection allocates only the returned *Conn,
// which must outlive the call.
//
// Detect owns conn's read deadline while it runs and clears it (sets it to
// zero) before returning; a caller that wants a read deadline sets it after.
func (d *Detector) Detect(ctx context.Context, conn net.Conn) (Result, net.Conn, error) {
	return d.DetectFrom(ctx, conn, time.Now())
}

// DetectFrom is Detect for a detection that began at start rather than
// now: for a caller that has already spent part of the timeout (waiting a
// grace period before speculating, say) and must keep the whole wait within
// it. The timeout ends at start plus the Detector's Timeout, and the
// Result's Elapsed, like the duration metric, counts from start.
func (d *Detector) DetectFrom(ctx context.Context, conn net.Conn, start time.Time) (Result, net.Conn, error) {
	deadline := start.Add(d.timeout)
	if err := ctx.Err(); err != nil {
		return Result{Elapsed: time.Since(start)}, conn, fmt.Errorf("protocol detection: %w", err)
	}

	ctxDeadline := false
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline, ctxDeadline = dl, true
	}
	_ = conn.SetReadDeadline(deadline) // a conn that fails here fails its read too
	var watch *watchNode
	if ctx.Done() != nil {
		watch = d.watchers.watch(ctx, conn)
	}

	bp := d.pool.Get().(*[]byte)
	buf := *bp
	var (
		res      Result
		sc       scanner
		n        int
		decided  bool
		timedOut bool
		replay   error // the read error to replay after the peeked bytes
	)
	for !decided && n < len(buf) {
		m, err := conn.Read(buf[n:])
		n += m
		if m > 0 {
			decided = d.hellos.examine(&sc, buf[:n], &res)
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				timedOut = true
			} else {
				replay = err
			}
			break
		}
	}

	if watch != nil {
		d.watchers.unwatch(watch)
	}
	_ = conn.SetReadDeadline(time.Time{})

	res.Peeked = n
	var out net.Conn = conn
	switch {
	case n > 0:
		out = newConn(conn, &d.pool, bp, buf[:n], replay)
	case replay != nil:
		d.pool.Put(bp)
		out = newConn(conn, nil, nil, nil, replay)
	default:
		d.pool.Put(bp)
	}

	if timedOut && !decided {
		err := ctx.Err()
		if err == nil && ctxDeadline {
			err = context.DeadlineExceeded
		}
		if err != nil {
			res.Elapsed = time.Since(start)
			return res, out, fmt.Errorf("protocol detection: %w", err)
		}
	}

	switch {
	case decided:
		res.Outcome = outcomeOf(res.Protocol)
	case timedOut:
		res.Outcome = OutcomeTimeout
	case n == 0:
		res.Outcome = OutcomeEmpty
	default:
		res.Outcome = OutcomeOpaque // buffer full, or closed after a prefix
	}
	if !decided {
		res.Protocol = Opaque
	}
	res.Elapsed = time.Since(start)
	d.metrics.observe(res.Outcome, res.Elapsed)
	if res.Outcome == OutcomeTimeout {
		d.logger.Info(d.timeoutMsg,
			zap.String("direction", d.direction),
			zap.Stringer("client", conn.RemoteAddr()),
			zap.Duration("timeout", d.timeout),
			zap.Duration("elapsed", res.Elapsed),
			zap.Int("peeked", n),
		)
	}
	return res, out, nil
}

// examine classifies the peeked bytes b, filling in res, and reports whether
// detection is done. Bytes that start a TLS handshake record are opaque at
// once, but detection goes on while they are an incomplete ClientHello,
// whose names come from in.
func (in *interner) examine(sc *scanner, b []byte, res *Result) bool {
	p, done := sc.scan(b)
	if !done {
		return false
	}
	res.Protocol = p
	if p != Opaque || b[0] != recordTypeHandshake {
		return true
	}
	hello, err := in.parseClientHello(b)
	switch {
	case err == errIncomplete:
		return false
	case err == nil:
		res.TLS, res.SNI, res.ALPN = true, hello.serverName, hello.alpn
	}
	return true
}
