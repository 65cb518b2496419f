package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/internal/duplex"
)

// tunnel carries a CONNECT request: it opens a raw connection to the
// upstream, sends the request on it, relays the upstream's answer, and then
// copies bytes both ways, as a proxy on the path of a CONNECT must (RFC
// 9110, 9.3.6). The upstream (the app, behind the peer proxy) is the one
// that decides whether and where to tunnel.
func (s *Server) tunnel(w http.ResponseWriter, r *http.Request, ex *exchange, info *Conn) {
	if info.Tunnel == nil || r.ProtoMajor != 1 {
		s.fail(w, r, ex, failure{http.StatusMethodNotAllowed, grpcUnavailable, ReasonMethod}, nil)
		return
	}
	up, err := info.Tunnel(r.Context())
	if err != nil {
		s.fail(w, r, ex, classify(err), err)
		return
	}
	if id := PeerID(up); id != "" {
		ex.serverID = id
	}
	br := bufio.NewReader(up)
	// An upstream that never answers must not hold the handler (and both
	// conns) after the client has gone or the proxy has shut down.
	stop := context.AfterFunc(r.Context(), func() { _ = up.SetDeadline(time.Unix(1, 0)) })
	resp, err := s.openTunnel(up, br, r)
	if !stop() && err == nil {
		err = context.Cause(r.Context())
	}
	if err != nil {
		_ = up.Close()
		s.fail(w, r, ex, failure{http.StatusBadGateway, grpcUnavailable, ReasonTunnel}, err)
		return
	}
	ex.status, ex.headersAt = resp.StatusCode, time.Now()

	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = up.Close()
		s.log.Info("CONNECT: taking over the client connection failed", zap.Error(err))
		ex.failed = true
		return
	}
	// The server's read deadlines no longer apply to a raw stream.
	_ = client.SetDeadline(time.Time{})
	// Relay the answer's head, then whatever either side sent early.
	err = writeHead(brw.Writer, resp)
	if err == nil {
		err = relayBuffered(brw.Writer, br)
	}
	if err == nil {
		err = brw.Writer.Flush()
	}
	if err == nil {
		err = relayBuffered(up, brw.Reader)
	}
	if err != nil {
		_ = client.Close()
		_ = up.Close()
		ex.failed = true
		return
	}
	if _, err := duplex.Join(context.WithoutCancel(r.Context()), client, up, s.cfg.Copy); err != nil && !errors.Is(err, context.Canceled) {
		s.log.Debug("CONNECT tunnel ended with an error", zap.Error(err))
	}
}

// openTunnel sends the CONNECT request head on up and reads the answer's
// head. The request has no body: a CONNECT request's content has no
// defined meaning.
func (s *Server) openTunnel(up net.Conn, br *bufio.Reader, r *http.Request) (*http.Response, error) {
	bw := bufio.NewWriter(up)
	fmt.Fprintf(bw, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", r.RequestURI, r.Host)
	h := r.Header.Clone()
	for _, k := range []string{"Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length"} {
		h.Del(k)
	}
	if err := h.Write(bw); err != nil {
		return nil, err
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	return http.ReadResponse(br, r)
}

// writeHead writes a response's status line and headers, without its body.
func writeHead(w *bufio.Writer, resp *http.Response) error {
	fmt.Fprintf(w, "HTTP/1.1 %s\r\n", resp.Status)
	if err := resp.Header.Write(w); err != nil {
		return err
	}
	_, err := w.WriteString("\r\n")
	return err
}

// relayBuffered writes what br holds already read ahead.
func relayBuffered(w interface{ Write([]byte) (int, error) }, br *bufio.Reader) error {
	n := br.Buffered()
	if n == 0 {
		return nil
	}
	b, _ := br.Peek(n)
	_, err := w.Write(b)
	return err
}
