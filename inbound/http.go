package inbound

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/httpproxy"
	"github.com/seed722d2a70/meshproxy/internal/header"
	"github.com/seed722d2a70/meshproxy/metrics"
)

// serveHTTP serves a connection carrying HTTP for the workload's port,
// request by request, forwarding to the workload with the same protocol
// (session). The peer is the mesh client, or the zero peer for an unmeshed
// client's plaintext HTTP, labelled tls="no_identity". refuse, when not
// empty, is the policy's verdict on the peer for this port: every request
// is then answered 403 with it, so the client learns why instead of seeing
// a dropped connection.
func (p *Proxy) serveHTTP(ctx context.Context, conn net.Conn, pr peer, port uint16, session header.SessionProtocol, refuse string) {
	addr := net.JoinHostPort(p.cfg.WorkloadHost, strconv.Itoa(int(port)))
	tlsLabel := metrics.TLSTrue
	if pr.ID.IsZero() {
		tlsLabel = metrics.TLSNoIdentity
	}
	info := &httpproxy.Conn{
		Protocol: session,
		Upstream: addr,
		Labels: httpproxy.Labels{
			Direction: metrics.DirectionInbound, TLS: tlsLabel, ClientID: pr.ID.String(), TargetAddr: addr,
		},
		Refuse: refuse,
	}
	if refuse == "" {
		// A refused peer reaches nothing, so it gets no pool to the
		// workload either.
		pool := p.workloads.get(p, addr, pr, session)
		info.Transport, info.H1 = pool, pool
		if session == header.HTTP2 && p.cfg.HTTP2Relay {
			info.H2 = pool.H2()
		}
		info.Tunnel = func(ctx context.Context) (net.Conn, error) { return p.dialWorkload(ctx, addr, pr) }
	}
	p.http.ServeConn(ctx, conn, info)
}

// dialWorkload connects to the workload at addr, counted in the tcp_*
// metrics.
func (p *Proxy) dialWorkload(ctx context.Context, addr string, pr peer) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	app, err := p.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		p.cfg.Metrics.refused(reasonWorkloadUnreachable)
		p.log.Info("connecting to workload failed", zap.String("workload_addr", addr), zap.Error(err))
		return nil, err
	}
	return p.cfg.Transport.Track(app, metrics.Labels{
		Direction: metrics.DirectionInbound, Peer: metrics.PeerDst, TLS: metrics.TLSDisabled, ClientID: pr.ID.String(), TargetAddr: addr,
	}), nil
}

type workloadKey struct {
	addr     string
	clientID string
	session  header.SessionProtocol
}

// workloads are the pools of HTTP connections to the workload, one per
// port, protocol and peer identity (the tcp_* labels of a pooled
// connection name the peer it was opened for).
type workloads struct {
	httpproxy.Pools[workloadKey]
}

func (w *workloads) get(p *Proxy, addr string, pr peer, session header.SessionProtocol) *httpproxy.Pool {
	return w.Get(workloadKey{addr, pr.ID.String(), session}, time.Now(), func() *http.Transport {
		return httpproxy.NewTransport(httpproxy.TransportConfig{
			Dial:     func(ctx context.Context) (net.Conn, error) { return p.dialWorkload(ctx, addr, pr) },
			Protocol: session,
		})
	})
}
