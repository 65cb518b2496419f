package inbound

import (
	"errors"
	"fmt"

	"github.com/seed722d2a70/meshproxy/ports"
)

// ErrLoop is returned for a connection that would be forwarded to one of the
// proxy's own ports: through the proxy again, forever.
var ErrLoop = errors.New("forwarding loop: port belongs to the proxy")

// preventLoop refuses a target port that the proxy itself listens on.
func preventLoop(port uint16, own ports.Set) error {
	if own.Contains(port) {
		return fmt.Errorf("port %d: %w", port, ErrLoop)
	}
	return nil
}
