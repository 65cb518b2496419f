package outbound

import (
	"context"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/detect"
)

// detected is what the detect step decided for a connection.
type detected struct {
	res  detect.Result
	conn net.Conn // the client's conn, replaying what was peeked
	// upstream is a connection to the destination opened speculatively,
	// or nil; serverID is its peer's identity when meshed, dialed the route
	// it was dialed by.
	upstream net.Conn
	serverID string
	dialed   Route
}

// detect finds out what a connection to a non-opaque port carries.
//
// Server-speaks-first protocols (SMTP, MySQL, NATS, ...) send nothing until
// the server greets them, so plain detection would wait its whole timeout on
// every connection. Two things avoid that:
//
//   - A destination once seen speaking first is remembered (ServerFirst) and
//     later connections to it skip detection.
//   - A client still silent after SpeculateAfter gets a connection to its
//     destination opened speculatively. If the server speaks while the
//     client is silent, the connection is server-first: its greeting goes to
//     the client at once. If the client speaks first, detection goes on as
//     usual; for HTTP the speculative connection is dropped (the one cost:
//     an extra connection for a client silent longer than the grace period
//     that then speaks HTTP), otherwise it is used.
//
// The detection timeout stays the upper bound of the whole wait.
func (p *Proxy) detect(ctx context.Context, log *zap.Logger, conn net.Conn, route Route) (detected, error) {
	det := p.cfg.Detector
	key := route.Target.String()
	if p.cfg.ServerFirst.Known(key) {
		p.cfg.DetectMetrics.Observe(detect.Outbound, detect.OutcomeLearned, 0)
		return detected{res: detect.Result{Protocol: detect.Opaque, Outcome: detect.OutcomeLearned}, conn: conn}, nil
	}
	start := time.Now()
	grace := p.cfg.SpeculateAfter
	if grace <= 0 || grace >= det.Timeout() || p.cfg.NoSpeculate.Contains(route.Target.Port) {
		res, conn, err := det.DetectFrom(ctx, conn, start)
		if res.Outcome == detect.OutcomeTimeout && res.Peeked == 0 {
			// Silent for the whole timeout: not a client-first protocol.
			p.cfg.ServerFirst.Learn(key)
		}
		return detected{res: res, conn: conn}, err
	}

	graceCtx, cancel := context.WithDeadline(ctx, start.Add(grace))
	res, conn, err := det.DetectFrom(graceCtx, conn, start)
	cancel()
	if err == nil || ctx.Err() != nil {
		return detected{res: res, conn: conn}, err
	}
	if res.Peeked > 0 {
		// Talking, only slowly: a client-first protocol.
		res, conn, err = det.DetectFrom(ctx, conn, start)
		return detected{res: res, conn: conn}, err
	}
	return p.speculate(ctx, log, conn, route, key, start)
}

// speculate opens a connection to the destination while detection goes on
// and waits for whichever speaks first: the client (detection decides) or
// the server (server-first). The dial runs alongside detection, so a slow or
// failing destination never holds up a client that speaks.
func (p *Proxy) speculate(ctx context.Context, log *zap.Logger, conn net.Conn, route Route, key string, start time.Time) (detected, error) {
	type detection struct {
		res  detect.Result
		conn net.Conn
		err  error
	}
	dctx, cancelDetect := context.WithCancel(ctx)
	defer cancelDetect()
	client := make(chan detection, 1)
	go func() {
		res, c, err := p.cfg.Detector.DetectFrom(dctx, conn, start)
		client <- detection{res, c, err}
	}()

	type dialing struct {
		conn     net.Conn
		serverID string
		route    Route
		err      error
	}
	sctx, cancelDial := context.WithCancel(ctx)
	defer cancelDial()
	dialed := make(chan dialing, 1)
	go func() {
		c, id, r, err := p.dial(sctx, route)
		dialed <- dialing{c, id, r, err}
	}()

	var (
		upstream net.Conn
		serverID string
		used     Route
		greeting chan []byte // the server's first read, once connected
	)
	// drop closes the speculative connection, or the one still being
	// dialed once the dial gives up, and waits for its reader.
	drop := func() {
		cancelDial()
		if dialed != nil {
			if d := <-dialed; d.err == nil {
				_ = d.conn.Close()
			}
		}
		if upstream != nil {
			_ = upstream.Close()
			if greeting != nil {
				<-greeting
			}
		}
	}
	for {
		select {
		case d := <-dialed:
			dialed = nil
			if d.err != nil {
				// Nothing to speculate with; the usual path reports the
				// failure once it knows what the client wants.
				log.Debug("speculative connection failed", zap.Error(d.err))
				continue
			}
			upstream, serverID, used = d.conn, d.serverID, d.route
			greeting = make(chan []byte, 1)
			go func(up net.Conn, greeting chan<- []byte) {
				buf := make([]byte, 4<<10)
				n, _ := up.Read(buf)
				greeting <- buf[:n]
			}(upstream, greeting)

		case g := <-greeting:
			greeting = nil
			if len(g) == 0 {
				// Closed or failed without a word: not a server-first
				// protocol, and no use to the client.
				_ = upstream.Close()
				upstream = nil
				continue
			}
			// The server spoke; the client was silent, unless its
			// request arrived in the same instant. Then HTTP wins: the
			// speculative connection and its greeting are dropped.
			cancelDetect()
			d := <-client
			if d.err == nil && d.res.Protocol != detect.Opaque {
				_ = upstream.Close()
				return detected{res: d.res, conn: d.conn}, nil
			}
			p.cfg.ServerFirst.Learn(key)
			elapsed := time.Since(start)
			p.cfg.DetectMetrics.Observe(detect.Outbound, detect.OutcomeServerFirst, elapsed)
			log.Debug("server spoke first", zap.Duration("elapsed", elapsed), zap.Int("greeting_bytes", len(g)))
			if err := deliver(d.conn, g); err != nil {
				_ = upstream.Close()
				return detected{conn: d.conn}, err
			}
			res := d.res
			res.Protocol, res.Outcome, res.Elapsed = detect.Opaque, detect.OutcomeServerFirst, elapsed
			return detected{res: res, conn: d.conn, upstream: upstream, serverID: serverID, dialed: used}, nil

		case d := <-client:
			// The client spoke, closed, or the timeout passed.
			if d.err != nil || d.res.Protocol != detect.Opaque {
				// HTTP is routed per request: the speculative connection
				// is not the one it needs.
				drop()
				return detected{res: d.res, conn: d.conn}, d.err
			}
			// Opaque: carried on the speculative connection, once dialed.
			if dialed != nil {
				if dd := <-dialed; dd.err == nil {
					upstream, serverID, used = dd.conn, dd.serverID, dd.route
				}
			}
			if upstream == nil {
				return detected{res: d.res, conn: d.conn}, nil
			}
			var g []byte
			if greeting != nil {
				// Stop the read without losing what it got. A read cut
				// short by its deadline leaves a TLS conn usable: deadline
				// errors are not sticky in crypto/tls.
				_ = upstream.SetReadDeadline(time.Now())
				g = <-greeting
				_ = upstream.SetReadDeadline(time.Time{})
			}
			if err := deliver(d.conn, g); err != nil {
				_ = upstream.Close()
				return detected{conn: d.conn}, err
			}
			return detected{res: d.res, conn: d.conn, upstream: upstream, serverID: serverID, dialed: used}, nil
		}
	}
}

// deliver writes what was read ahead from the server to the client. A
// server that closed or failed instead is left for the copy to carry: the
// next read of the upstream conn reports it again.
func deliver(client net.Conn, greeting []byte) error {
	if len(greeting) == 0 {
		return nil
	}
	_, err := client.Write(greeting)
	return err
}
