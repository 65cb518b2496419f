package outbound

import (
	"errors"
	"fmt"
	"time"

	"github.com/seed722d2a70/meshproxy/httpproxy"
)

// PickH2 chooses the endpoint of one stream of a relayed HTTP/2
// connection, as RoundTrip does for a request: the balancer hears how long
// its response headers took and holds the stream as the endpoint's load
// until it ends; a stream whose endpoint fails to connect moves on to
// another, up to maxEndpointAttempts. Nothing of a stream is sent before it
// connects, so this holds for streams with bodies too.
func (t *balancedTransport) PickH2(skip map[string]bool) (httpproxy.H2Pick, error) {
	if skip == nil {
		skip = map[string]bool{}
	}
	h, ep, ok := t.route.Endpoints.pick(skip)
	if !ok {
		return httpproxy.H2Pick{}, fmt.Errorf("%s: %w", t.route.Target, ErrNoEndpoints)
	}
	er, err := t.p.endpointRoute(t.route, ep, false)
	if err != nil {
		h.Done()
		return httpproxy.H2Pick{}, err
	}
	attempt := len(skip) + 1
	return httpproxy.H2Pick{
		Pool: t.p.upstreams.get(t.p, er, t.session).H2(),
		Key:  h.ID(),
		Observe: func(d time.Duration) {
			h.Observe(d)
			t.p.cfg.Metrics.endpointChoice(true)
		},
		Failed: func(err error) bool {
			var de *dialError
			if !errors.As(err, &de) || localQueueError(err) {
				return false
			}
			h.Fail()
			t.p.cfg.Metrics.endpointChoice(false)
			return attempt < maxEndpointAttempts
		},
		Done: h.Done,
	}, nil
}
