package inbound

import (
	"context"
	"errors"
	"net"
	"strconv"

	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/internal/duplex"
	"github.com/seed722d2a70/meshproxy/metrics"
)

// forward connects to the workload on port and copies both ways. The host
// is always the configured workload host: only the port came from the peer.
func (p *Proxy) forward(ctx context.Context, log *zap.Logger, conn net.Conn, pr peer, port uint16) {
	addr := net.JoinHostPort(p.cfg.WorkloadHost, strconv.Itoa(int(port)))
	dctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	app, err := p.dialer.DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		p.cfg.Metrics.refused(reasonWorkloadUnreachable)
		log.Info("connecting to workload failed", zap.String("workload_addr", addr), zap.Error(err))
		_ = conn.Close()
		return
	}
	app = p.cfg.Transport.Track(app, metrics.Labels{
		Direction: "inbound", Peer: "dst", TLS: "disabled", ClientID: pr.ID.String(), TargetAddr: addr,
	})
	if _, err := duplex.Join(ctx, conn, app, p.cfg.Copy); err != nil && !errors.Is(err, context.Canceled) {
		log.Debug("connection ended with an error", zap.Error(err))
	}
}
