package inbound

import (
	"fmt"
	"net"
	"time"

	"github.com/seed722d2a70/meshproxy/internal/header"
)

// readHeader reads the transport header that opens every mesh connection,
// within HeaderTimeout. The header codec caps its size, so a peer can make
// us hold neither memory nor a goroutine for long.
func (p *Proxy) readHeader(conn net.Conn) (header.Header, error) {
	if err := conn.SetReadDeadline(time.Now().Add(p.cfg.HeaderTimeout)); err != nil {
		return header.Header{}, err
	}
	h, err := header.Read(conn)
	if err != nil {
		p.cfg.Metrics.headerError(header.Reason(err))
		return header.Header{}, fmt.Errorf("%w: %w", errBadHeader, err)
	}
	// Established streams carry no deadline: they may idle for hours.
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return header.Header{}, err
	}
	return h, nil
}
