package httpproxy

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// inlineBodyMax is the largest request body sent before the response is
// read, on the connection's own goroutine. Larger bodies, chunked ones and
// those behind Expect: 100-continue are sent by a goroutine of their own
// while the response is read: the upstream may answer before it has read
// them, or to ask for them.
const inlineBodyMax = 64 << 10

// forward sends the request upstream and relays the answer.
func (c *h1Conn) forward() bool {
	req := &c.req
	if c.info.H1 == nil {
		c.fail(failure{http.StatusBadGateway, grpcUnavailable, ReasonUnreachable}, errors.New("no upstream for HTTP/1"), true)
		return false
	}
	var (
		up    *UpstreamConn
		lease Lease
		err   error
	)
	defer c.up.Store(nil)
	for attempt := 0; ; attempt++ {
		up, lease, err = c.info.H1.Conn(c.ctx, c.hasBody)
		if err != nil {
			c.fail(classify(err), err, c.hasBody)
			return !c.hasBody && req.keepAlive()
		}
		c.up.Store(up)
		if c.ctx.Err() != nil {
			// ctx ended before up was stored, so its AfterFunc missed it.
			_ = up.conn.Close()
		}
		c.ex.serverID = up.peerID
		c.resp.raw, c.resp.status = c.resp.raw[:0], 0
		err = c.send(up)
		if err == nil {
			err = c.readResponseHead(up)
		}
		if err != nil && attempt == 0 && c.retryable(up, err) {
			// A reused conn the upstream had closed: nothing of the
			// request was taken, so it goes again, on another idle
			// conn of the pool or a new one.
			up.release(false)
			done(lease)
			continue
		}
		break
	}
	if err != nil {
		if ended, bodyErr := c.endBody(up); bodyErr != nil && (ended || c.bodyAborted) {
			// What ended the wait for the response: a client failing
			// mid-body is not an upstream timeout.
			err = bodyErr
		}
		up.release(false)
		done(lease)
		c.fail(c.classifyUpstream(err), err, !c.bodySent)
		return c.bodySent && req.keepAlive() && !c.clientGone(err)
	}
	if lease != nil {
		lease.Responded()
	}
	if c.resp.status == http.StatusSwitchingProtocols {
		return c.switchUpgrade(up, lease)
	}
	ok := c.relayResponse(up)
	done(lease)
	return ok
}

func done(l Lease) {
	if l != nil {
		l.Done()
	}
}

// classifyUpstream is classify for errors of the upstream exchange, where a
// client that went away is told apart from an upstream that failed.
func (c *h1Conn) classifyUpstream(err error) failure {
	if c.clientGone(err) {
		return failure{http.StatusBadGateway, grpcCanceled, ReasonCanceled}
	}
	return classify(err)
}

// clientGone reports whether err came from the client's side: a request
// body that could not be read, or a 1xx that could not be written (the
// only writes to the client before the response head).
func (c *h1Conn) clientGone(err error) bool {
	var ce *clientError
	var we *writeError
	return errors.As(err, &ce) || errors.As(err, &we)
}

// clientError marks an error reading the request body from the client.
type clientError struct{ err error }

func (e *clientError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *clientError) Unwrap() error { return e.err }

// retryable reports whether a request that failed on up can be sent again:
// up was reused, the request has no body, is idempotent, and the upstream
// closed without a byte of answer.
func (c *h1Conn) retryable(up *UpstreamConn, err error) bool {
	if !up.reused || c.hasBody || len(c.resp.raw) > 0 {
		return false
	}
	switch string(c.req.bytes(c.req.method)) {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
	default:
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// send writes the request head upstream, and the body: inline when it is
// small and known, else by a goroutine (see inlineBodyMax).
func (c *h1Conn) send(up *UpstreamConn) error {
	req := &c.req
	bw := c.s.writer(up.conn)
	writeRequestHead(bw, req, c.info.Upstream)
	if !c.hasBody || req.chunked || req.expectContinue || req.contentLength > inlineBodyMax {
		err := bw.Flush()
		if err != nil || !c.hasBody {
			c.s.writers.Put(bw)
			c.setResponseDeadline(up)
			return err
		}
		c.bodyDone = make(chan error, 1)
		go c.streamBody(bw, up)
		return nil
	}
	defer c.s.writers.Put(bw)
	bc := bodyCopy{dst: bw, src: c.br, bufs: &c.s.bufs}
	err := bc.n(req.contentLength)
	bc.release()
	if err == nil {
		if err = bw.Flush(); err != nil {
			err = &writeError{err}
		}
	}
	var we *writeError
	switch {
	case errors.As(err, &we):
		return we.err // the upstream's failure
	case err != nil:
		return &clientError{err}
	}
	c.bodySent = true
	c.setResponseDeadline(up)
	return nil
}

// streamBody sends the request body; it owns bw, and reads the client
// connection until the body ends.
func (c *h1Conn) streamBody(bw *bufio.Writer, up *UpstreamConn) {
	bc := bodyCopy{dst: bw, src: c.br, bufs: &c.s.bufs}
	var err error
	if c.req.chunked {
		err = bc.chunked(&c.reqTrailers, false)
	} else {
		err = bc.n(c.req.contentLength)
	}
	bc.release()
	if err == nil {
		if ferr := bw.Flush(); ferr != nil {
			err = &writeError{ferr}
		}
	}
	c.s.writers.Put(bw)
	var we *writeError
	switch {
	case err == nil:
		c.deadlines.Lock()
		if !c.headSeen {
			c.setResponseDeadline(up)
		}
		c.deadlines.Unlock()
	case errors.As(err, &we):
		// The upstream's failure: its answer, or the end of its stream,
		// is what the response read will find.
		err = we.err
	default:
		// The client's: nobody waits for the answer any more, unless it
		// has come already and is being relayed.
		err = &clientError{err}
		c.deadlines.Lock()
		if !c.headSeen {
			c.bodyAborted = true
			_ = up.conn.SetReadDeadline(time.Unix(1, 0))
		}
		c.deadlines.Unlock()
	}
	c.bodyDone <- err
}

// setResponseDeadline starts the wait for the response head, once the
// request is sent, as net/http's ResponseHeaderTimeout.
func (c *h1Conn) setResponseDeadline(up *UpstreamConn) {
	if t := up.pool.responseTimeout; t > 0 {
		_ = up.conn.SetReadDeadline(time.Now().Add(t))
	}
}

// endBody waits for the request body's goroutine, if any, stopping it if
// it is still under way: the exchange is over. It returns the goroutine's
// error if it ended by itself, and sets bodySent.
func (c *h1Conn) endBody(up *UpstreamConn) (ended bool, err error) {
	if c.bodyDone == nil {
		return false, nil
	}
	select {
	case err = <-c.bodyDone:
		ended = true
	default:
		// Blocked reading the client or writing the upstream: unblock it.
		past := time.Unix(1, 0)
		_ = c.conn.SetReadDeadline(past)
		_ = up.conn.SetWriteDeadline(past)
		err = <-c.bodyDone
		_ = c.conn.SetReadDeadline(time.Time{})
		_ = up.conn.SetWriteDeadline(time.Time{})
	}
	c.bodyDone = nil
	c.bodySent = err == nil
	return ended, err
}

// readResponseHead reads the response head, relaying 1xx answers: a 100
// Continue once, to a client that asked for one; others as they come. An
// HTTP/1.0 client gets none.
func (c *h1Conn) readResponseHead(up *UpstreamConn) error {
	c.resp.raw = c.resp.raw[:0]
	c.resp.status = 0
	for informational := 0; ; informational++ {
		err := c.resp.read(up.br)
		if err == nil {
			err = c.resp.parseResponse()
		}
		if err != nil {
			return err
		}
		st := c.resp.status
		if st >= 200 || st == http.StatusSwitchingProtocols {
			break
		}
		if informational == 10 {
			return errors.New("more than 10 informational responses")
		}
		if c.req.minor == 0 || st == http.StatusContinue && (!c.req.expectContinue || c.sent100) {
			continue
		}
		c.sent100 = c.sent100 || st == http.StatusContinue
		writeResponseHead(c.bw, &c.resp, "")
		_, _ = c.bw.WriteString("\r\n")
		if err := c.bw.Flush(); err != nil {
			return &writeError{err}
		}
	}
	c.deadlines.Lock()
	c.headSeen = true
	if up.pool.responseTimeout > 0 {
		_ = up.conn.SetReadDeadline(time.Time{})
	}
	c.deadlines.Unlock()
	c.ex.status = c.resp.status
	c.ex.headersAt = time.Now()
	return nil
}

// Response body framings.
const (
	bodyNone = iota
	bodyLength
	bodyChunked
	bodyUntilClose
)

// relayResponse writes the response head and streams its body, then
// returns up to its pool if the exchange left it clean. It reports whether
// the client connection can carry another request.
func (c *h1Conn) relayResponse(up *UpstreamConn) bool {
	req, resp := &c.req, &c.resp
	kind := bodyUntilClose
	switch {
	case string(req.bytes(req.method)) == http.MethodHead || resp.status == http.StatusNoContent ||
		resp.status == http.StatusNotModified || resp.status < 200:
		kind = bodyNone
	case resp.chunked:
		kind = bodyChunked
	case resp.contentLength >= 0:
		kind = bodyLength
	}
	dataOnly := kind == bodyChunked && req.minor == 0
	closeClient := !req.keepAlive() || c.s.h1.closing.Load() || kind == bodyUntilClose || dataOnly ||
		// The client waits for a 100 that will not come, or sends a body
		// nobody reads: where its next request starts is unknown.
		c.bodyDone != nil && req.expectContinue && !c.sent100

	bw := c.bw
	writeResponseHead(bw, resp, "")
	switch {
	case kind == bodyLength || kind == bodyNone && resp.contentLength >= 0 && resp.status != http.StatusNoContent:
		writeContentLength(bw, resp.contentLength)
	case kind == bodyChunked && !dataOnly:
		_, _ = bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	switch {
	case closeClient:
		_, _ = bw.WriteString("Connection: close\r\n")
	case req.minor == 0:
		_, _ = bw.WriteString("Connection: keep-alive\r\n")
	}
	_, _ = bw.WriteString("\r\n")

	bc := bodyCopy{dst: bw, src: up.br, bufs: &c.s.bufs}
	var err error
	switch kind {
	case bodyLength:
		err = bc.n(resp.contentLength)
	case bodyChunked:
		// No grpc-status of a previous response's trailers must be
		// taken for this one's if it ends before its own.
		c.respTrailers.reset()
		err = bc.chunked(&c.respTrailers, dataOnly)
	case bodyUntilClose:
		err = bc.n(-1)
	}
	bc.release()
	switch {
	case kind == bodyChunked && !c.respTrailers.grpcStatus.empty():
		c.ex.grpcStatus = string(c.respTrailers.bytes(c.respTrailers.grpcStatus))
	case !resp.grpcStatus.empty():
		c.ex.grpcStatus = string(resp.bytes(resp.grpcStatus))
	}
	c.endBody(up)
	if err != nil {
		// The client got a truncated answer, whatever its status.
		c.ex.failed = true
		c.s.log.Info("response cut short", zap.String("method", string(req.bytes(req.method))),
			authorityField(c.host), zap.Int("status", resp.status), zap.Error(err))
		up.release(false)
		return false
	}
	up.release(kind != bodyUntilClose && c.bodySent && resp.keepAlive())
	return !closeClient && c.bodySent
}

// writeRequestHead writes h upstream: origin-form target, Host first (the
// upstream's address for an HTTP/1.0 request without one), end-to-end
// fields, and the framing and upgrade fields the relay vouches for.
func writeRequestHead(w *bufio.Writer, h *h1Head, upstream string) {
	_, _ = w.Write(h.bytes(h.method))
	_ = w.WriteByte(' ')
	path := h.requestPath()
	if len(path) == 0 || path[0] == '?' {
		_ = w.WriteByte('/')
	}
	_, _ = w.Write(path)
	_, _ = w.WriteString(" HTTP/1.1\r\nHost: ")
	if a := h.authority(); len(a) > 0 {
		_, _ = w.Write(a)
	} else {
		_, _ = w.WriteString(upstream)
	}
	_, _ = w.WriteString("\r\n")
	for _, f := range h.fields {
		if !h.hopByHop(f) {
			_ = writeField(w, h, f)
		}
	}
	if h.teTrailers {
		_, _ = w.WriteString("Te: trailers\r\n")
	}
	if h.upgrading() {
		_, _ = w.WriteString("Connection: Upgrade\r\nUpgrade: ")
		_, _ = w.Write(h.bytes(h.upgrade))
		_, _ = w.WriteString("\r\n")
	}
	switch {
	case string(h.bytes(h.method)) == http.MethodConnect:
		// A CONNECT request has no content (RFC 9110, 9.3.6): what
		// follows its head is the tunnel's.
	case h.chunked:
		_, _ = w.WriteString("Transfer-Encoding: chunked\r\n")
	case h.contentLength >= 0:
		writeContentLength(w, h.contentLength)
	}
	_, _ = w.WriteString("\r\n")
}

// writeResponseHead writes a response's status line and end-to-end
// fields, not the empty line, with extra after the fields.
func writeResponseHead(w *bufio.Writer, h *h1Head, extra string) {
	_, _ = w.WriteString("HTTP/1.1 ")
	_, _ = w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(h.status), 10))
	_ = w.WriteByte(' ')
	if h.reason.empty() {
		_, _ = w.WriteString(http.StatusText(h.status))
	} else {
		_, _ = w.Write(h.bytes(h.reason))
	}
	_, _ = w.WriteString("\r\n")
	for _, f := range h.fields {
		if !h.hopByHop(f) {
			_ = writeField(w, h, f)
		}
	}
	_, _ = w.WriteString(extra)
}

func writeContentLength(w *bufio.Writer, n int64) {
	_, _ = w.WriteString("Content-Length: ")
	_, _ = w.Write(strconv.AppendInt(w.AvailableBuffer(), n, 10))
	_, _ = w.WriteString("\r\n")
}
