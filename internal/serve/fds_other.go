//go:build !linux

package serve

import "net"

// acceptWithSpare would accept into the spare descriptor's slot; without
// accept4 (Linux) the loop only backs off, and returns err.
func (s *Server) acceptWithSpare(_ net.Listener, err error) (net.Conn, error) {
	return nil, err
}
