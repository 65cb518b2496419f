package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/internal/duplex"
)

// switchUpgrade relays a 101 to a request that asked for that protocol,
// and then bytes both ways.
func (c *h1Conn) switchUpgrade(up *UpstreamConn, lease Lease) bool {
	done(lease)
	req, resp := &c.req, &c.resp
	if !req.upgrading() || !resp.connUpgrade || !equalFoldBytes(resp.bytes(resp.upgrade), req.bytes(req.upgrade)) {
		c.endBody(up)
		up.release(false)
		c.fail(failure{http.StatusBadGateway, grpcUnavailable, ReasonNoUpgrade},
			errors.New("the upstream switched to a protocol the request did not ask for"), true)
		return false
	}
	c.endBody(up)
	writeResponseHead(c.bw, resp, "Connection: Upgrade\r\nUpgrade: ")
	_, _ = c.bw.Write(resp.bytes(resp.upgrade))
	_, _ = c.bw.WriteString("\r\n\r\n")
	c.join(up.conn, up.br)
	return false
}

// connect carries a CONNECT request: a raw connection to the upstream, the
// request on it, the answer relayed, and then bytes both ways, as a proxy
// on the path of a CONNECT must (RFC 9110, 9.3.6).
func (c *h1Conn) connect() {
	if c.info.Tunnel == nil {
		c.fail(failure{http.StatusMethodNotAllowed, grpcUnavailable, ReasonMethod}, nil, true)
		return
	}
	up, err := c.info.Tunnel(c.ctx)
	if err != nil {
		c.fail(classify(err), err, true)
		return
	}
	c.ex.serverID = PeerID(up)
	bw := c.s.writer(up)
	writeRequestHead(bw, &c.req, c.info.Upstream)
	err = bw.Flush()
	c.s.writers.Put(bw)
	br := c.s.reader(up)
	defer c.s.readers.Put(br)
	if err == nil {
		// An upstream that never answers must not hold both conns after
		// the client has gone.
		stop := c.watchClient(up)
		err = c.resp.read(br)
		stop()
	}
	if err == nil {
		err = c.resp.parseResponse()
	}
	if err != nil {
		_ = up.Close()
		c.fail(failure{http.StatusBadGateway, grpcUnavailable, ReasonTunnel}, err, true)
		return
	}
	c.ex.status, c.ex.headersAt = c.resp.status, time.Now()
	// The answer goes as it came: whatever follows it is the tunnel's.
	_, _ = c.bw.Write(c.resp.raw)
	c.join(up, br)
}

// watchClient reads the client connection while the relay waits for up,
// and fails up's reads if the client leaves; stop ends the watch. Only
// CONNECT pays for this goroutine: a request's answer is bounded by the
// response timeout instead.
func (c *h1Conn) watchClient(up net.Conn) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := c.br.Peek(1); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			_ = up.SetReadDeadline(time.Unix(1, 0))
		}
	}()
	return func() {
		_ = c.conn.SetReadDeadline(time.Unix(1, 0))
		<-done
		_ = c.conn.SetReadDeadline(time.Time{})
	}
}

// join sends what c.bw holds and both sides have read ahead, then copies
// bytes both ways until both are done.
func (c *h1Conn) join(up net.Conn, upBR *bufio.Reader) {
	c.state.Store(h1Switched)
	err := relayBuffered(c.bw, upBR)
	if err == nil {
		err = c.bw.Flush()
	}
	if err == nil {
		err = relayBuffered(up, c.br)
	}
	if err != nil {
		_ = up.Close()
		c.ex.failed = true
		return
	}
	_ = c.conn.SetDeadline(time.Time{})
	if _, err := duplex.Join(context.WithoutCancel(c.ctx), c.conn, up, c.s.cfg.Copy); err != nil && !errors.Is(err, context.Canceled) {
		c.s.log.Debug("switched connection ended with an error", zap.Error(err))
	}
}
