package httpproxy

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// errUpstreamGone is the error of streams whose upstream connection ended
// under them.
var errUpstreamGone = errors.New("upstream connection closed")

// errHeadersTooLarge fails a stream whose header block is over a limit:
// the relay's, or that its peer announced.
var errHeadersTooLarge = errors.New("header list over the limit")

// errBadContentLength fails a response whose content-length is no length.
var errBadContentLength = errors.New("upstream response with an invalid content-length")

// errStreamRefused fails a request its upstreams refused every time.
var errStreamRefused = errors.New("upstream refused the stream on every attempt")

// errBadStatus and errTooMany1xx fail a response whose headers are no
// response's.
var (
	errBadStatus  = errors.New("upstream response without a valid :status")
	errTooMany1xx = errors.New("upstream sent too many informational (1xx) responses")
)

const (
	// h2MaxRefusals bounds the times a refused request without a body
	// is sent again; h2RefusedBackoff times the attempt is the wait
	// before it.
	h2MaxRefusals    = 2
	h2RefusedBackoff = 10 * time.Millisecond
	// h2Max1xx bounds the informational responses relayed per stream, as
	// net/http's transports do.
	h2Max1xx = 5
	// h2RespGrowth is how much a response window grows for each byte its
	// client reads: 4 takes a stream from h2UpStreamWindow to
	// h2StreamWindow once 240 KiB were read, in two or three round trips
	// of the upstream where a jump took one.
	h2RespGrowth = 4
	// h2ResetHold bounds how long a stream reset upstream keeps its
	// slots waiting for the upstream to confirm the reset (see hold).
	h2ResetHold = 5 * time.Second
	// h2IdleWindow is the least window a response stream's upstream must
	// have for its silence to mean idle (respIdleCheck): a frame of the
	// default maximum size. A sender may wait for room for one.
	h2IdleWindow = 16 << 10
)

// The states of h2stream.hold.
const (
	holdNone int32 = iota
	holdHeld
	holdReleased
)

// h2stream is one relayed stream: the client's stream on a client
// connection and, once chosen, a stream on a pooled upstream connection.
type h2stream struct {
	down   *h2down
	downID uint32
	resp   h2out // written to the client by down's writer

	reqRecv  atomic.Int32 // what the client may still send us
	respRecv atomic.Int32 // what the upstream may still send us
	closed   atomic.Bool  // finished: an upstream writer must not open it
	held     atomic.Int64 // bytes of DATA queued in the relay, both ways
	// hold: reset upstream, the stream keeps its slot on the upstream
	// connection and counts against the client's max streams until the
	// upstream has seen the reset (holdHeld), else the client could open
	// and reset streams faster than the upstream ends them (rapid reset,
	// CVE-2023-44487).
	hold atomic.Int32
	// heldCounted: guarded by down.mu, the stream counts in down.held.
	heldCounted bool
	// holdTimer, guarded by mu, ends the hold after h2ResetHold; unhold
	// stops it, so that it does not keep the stream for that long.
	holdTimer *time.Timer
	// heldUp is the upstream connection that holds the stream's slot:
	// set before hold is holdHeld, not changed after.
	heldUp *h2up
	// queued: guarded by down.mu, the stream waits in down.queue.
	queued bool

	// Set when the stream is created.
	fields       []hpack.HeaderField // the request headers as forwarded; guarded by mu, nil once done
	endOnHeaders bool
	grpc         bool
	method       string
	labels       Labels
	start        time.Time

	mu       sync.Mutex
	up       *h2up
	req      *h2out // written upstream by up's writer; new per attempt
	upID     uint32 // guarded by up.mu
	pick     H2Pick
	skip     map[string]bool
	lastErr  error
	refusals int      // times an upstream refused the stream
	pending  []h2item // request frames before an upstream is chosen
	timer    *time.Timer
	// respExtra is the window the response stream got beyond
	// h2UpStreamWindow, from its client's h2RespBudget; respIdleExtra the
	// part of it moved to h2RespIdleBudget once the stream was idle, and
	// respShrink that its window is not renewed until respExtra is 0.
	// respData: response DATA came since respIdle last looked;
	// respCredited: the upstream got window back since then.
	respExtra, respIdleExtra int64
	respShrink, respData     bool
	respCredited             bool
	respIdle                 *time.Timer
	num1xx                   int // informational responses relayed

	reqEndIn, reqEndOut, respEndIn, respEndOut bool
	respGone                                   bool // the client's response was reset
	clientGone                                 bool // the client reset the stream
	// respLast: the relay queued the last of the client's response
	// itself (its own answer, or a reset); see keepForResponse.
	respLast bool

	// The bodies' declared content-length (-1: none) and the bytes that
	// came, each used by the reader of its direction only.
	reqCL, respCL, reqGot, respGot int64
	final                          bool // final response headers came
	answered                       bool // the client has final headers
	done                           bool
	counted                        bool

	status     int
	grpcStatus string
	headersAt  time.Time
	failed     bool
	serverID   string

	// The padding of each direction's DATA not yet given back (see
	// creditPadding), each used by the reader of its direction only.
	reqPad, respPad uint32
}

func (s *h2stream) srv() *Server { return s.down.srv }

// dispatch chooses the stream's upstream and queues it there.
func (s *h2stream) dispatch() {
	pick, err := s.down.info.H2.PickH2(s.skip)
	if err != nil {
		if s.lastErr != nil {
			err = s.lastErr
		}
		s.fail(classify(err), err)
		return
	}
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		if pick.Done != nil {
			pick.Done()
		}
		return
	}
	s.pick = pick
	s.mu.Unlock()
	pick.Pool.open(s)
}

// attach sends the stream on c, which has a slot reserved for it.
func (s *h2stream) attach(c *h2up) {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		c.release(s)
		return
	}
	s.up = c
	s.req = &h2out{}
	s.serverID = c.peerID
	items := make([]h2item, 0, 1+len(s.pending))
	items = append(items, h2item{kind: h2Headers, s: s, o: s.req, fields: s.fields, end: s.endOnHeaders})
	for _, it := range s.pending {
		it.o = s.req
		items = append(items, it)
	}
	s.pending = nil
	ok := c.w.inbox.put(items...)
	s.mu.Unlock()
	if !ok {
		s.upstreamLost(c, errUpstreamGone)
	}
}

// connectFailed is told that the pool could not connect for the stream.
func (s *h2stream) connectFailed(err error) {
	s.mu.Lock()
	pick := s.pick
	s.pick = H2Pick{}
	done := s.done
	s.lastErr = err
	s.mu.Unlock()
	retry := pick.Failed != nil && pick.Failed(err)
	if pick.Done != nil {
		pick.Done()
	}
	if done {
		return
	}
	if retry && pick.Key != "" {
		if s.skip == nil {
			s.skip = map[string]bool{}
		}
		s.skip[pick.Key] = true
		s.dispatch()
		return
	}
	s.fail(classify(err), err)
}

// sendReq passes a request frame on, or holds it until there is an
// upstream.
func (s *h2stream) sendReq(it h2item) {
	it.s = s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done || s.reqEndIn {
		it.release(s.down.bufs)
		return
	}
	if it.end {
		s.reqEndIn = true
	}
	if s.up == nil {
		// Waiting for its upstream connection: tiny frames share a
		// buffer here too, or they pin one each (h2MaxHeld).
		if n := len(s.pending); n > 0 && s.pending[n-1].absorb(&it, s.down.bufs) {
			return
		}
		s.pending = append(s.pending, it)
		return
	}
	it.o = s.req
	s.down.batch.add(&s.up.w.inbox, it) // in the client's reader
}

// ended is told by a writer that it wrote the stream's END_STREAM.
func (s *h2stream) ended(c *h2conn) {
	s.mu.Lock()
	if s.done {
		if c.upstream {
			s.mu.Unlock()
			return
		}
		// Ended upstream before the client had all of it: the stream
		// stayed with its client connection until now.
		s.respEndOut = true
		s.mu.Unlock()
		s.down.release(s)
		return
	}
	if c.upstream {
		if s.up == nil || &s.up.h2conn != c {
			s.mu.Unlock() // an attempt that was refused
			return
		}
		s.reqEndOut = true
		if t := s.up.pool.cfg.ResponseTimeout; t > 0 && !s.final {
			// From the end of the request, as net/http's transport.
			s.timer = time.AfterFunc(t, s.timedOut)
		}
	} else {
		s.respEndOut = true
	}
	fin := s.respEndOut && s.reqEndOut
	if fin {
		s.done = true
	}
	s.mu.Unlock()
	if fin {
		s.finish()
	}
}

// responseHeaders relays response headers or trailers from the upstream.
func (s *h2stream) responseHeaders(c *h2up, f *http2.MetaHeadersFrame) {
	if f.Truncated {
		// Cut at the limit: not passed on short (trailers could lose
		// grpc-status). The client gets a 502, or a reset.
		s.mu.Lock()
		ours := s.up == c
		s.mu.Unlock()
		if ours {
			s.fail(failure{http.StatusBadGateway, grpcUnavailable, ReasonBadGateway}, errHeadersTooLarge)
		}
		return
	}
	fields := filterFields(f.Fields, true)
	end := f.StreamEnded()
	s.mu.Lock()
	if s.done || s.up != c {
		s.mu.Unlock()
		return
	}
	var observe func(time.Duration)
	if !s.final {
		code, ok := parseStatus(f.PseudoValue("status"))
		if !ok || (code < 200 && (end || code == http.StatusSwitchingProtocols)) {
			// No response (RFC 9113, 8.3.2; 101 is HTTP/1's, 8.6): the
			// upstream broke the exchange, as with a bad content-length.
			s.mu.Unlock()
			s.badResponse(c, errBadStatus)
			return
		}
		if code < 200 {
			// 1xx: relayed, and the final answer is still to come.
			if s.num1xx++; s.num1xx > h2Max1xx {
				s.mu.Unlock()
				s.badResponse(c, errTooMany1xx)
				return
			}
			c.batch.add(&s.down.w.inbox, h2item{kind: h2Headers, s: s, o: &s.resp, fields: fields})
			s.mu.Unlock()
			return
		}
		cl, ok := contentLength(fields)
		if !ok {
			s.mu.Unlock()
			s.badResponse(c, errBadContentLength)
			return
		}
		if s.method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified {
			cl = -1 // no body whatever the field says
		}
		s.respCL = cl
		s.final, s.answered = true, true
		s.status = code
		s.headersAt = time.Now()
		if s.timer != nil {
			s.timer.Stop()
		}
		observe = s.pick.Observe
	} else if !end {
		s.mu.Unlock()
		s.resetBoth(http2.ErrCodeProtocol)
		return
	}
	if end {
		s.respEndIn = true
		if v := fieldValue(fields, "grpc-status"); v != "" {
			s.grpcStatus = v
		}
		s.countLocked()
	}
	c.batch.add(&s.down.w.inbox, h2item{kind: h2Headers, s: s, o: &s.resp, fields: fields, end: end})
	s.mu.Unlock()
	if observe != nil {
		observe(time.Since(s.start))
	}
}

// badResponse fails a stream whose upstream answered with no response:
// 502 to the client, behind the 1xx answers relayed before it.
func (s *h2stream) badResponse(c *h2up, err error) {
	c.batch.flush() // in c's reader
	s.fail(failure{http.StatusBadGateway, grpcUnavailable, ReasonBadGateway}, err)
}

// responseData relays response DATA from the upstream.
func (s *h2stream) responseData(c *h2up, it h2item) {
	it.s, it.o = s, &s.resp
	s.mu.Lock()
	if s.done || s.up != c || s.respEndIn {
		s.mu.Unlock()
		it.release(c.bufs)
		return
	}
	if !s.final {
		s.mu.Unlock()
		it.release(c.bufs)
		s.resetBoth(http2.ErrCodeProtocol)
		return
	}
	if !bodyFits(&s.respGot, s.respCL, len(it.data), it.end) {
		s.mu.Unlock()
		it.release(c.bufs)
		s.resetBoth(http2.ErrCodeProtocol)
		return
	}
	if it.end {
		s.respEndIn = true
		s.countLocked()
	}
	s.respData = true
	c.batch.add(&s.down.w.inbox, it)
	s.mu.Unlock()
}

// overHeld reports, counting and logging it, whether the stream's queued
// DATA pins more than h2MaxHeld: a peer sending tiny frames into a closed
// window. The caller resets the stream.
func (s *h2stream) overHeld(peer string) bool {
	if s.held.Load() <= h2MaxHeld {
		return false
	}
	srv := s.srv()
	srv.cfg.Metrics.h2ConnError(srv.cfg.Direction, peer, http2.ErrCodeEnhanceYourCalm)
	srv.logLimited(srv.h2FailedLog, "HTTP/2 stream reset: too much DATA held", "h2_held",
		authorityField(s.labels.Authority), zap.Int64("held", s.held.Load()))
	return true
}

// parseStatus parses a response's :status: three digits, 100 to 599.
func parseStatus(v string) (int, bool) {
	if len(v) != 3 {
		return 0, false
	}
	code := 0
	for i := range 3 {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
		code = 10*code + int(v[i]-'0')
	}
	return code, code >= 100 && code <= 599
}

// contentLength parses a content-length field: -1 if there is none,
// false if it is not a length.
func contentLength(fields []hpack.HeaderField) (int64, bool) {
	v := fieldValue(fields, "content-length")
	if v == "" {
		return -1, true
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n >= 0
}

// bodyFits counts n more body bytes of a direction whose declared length
// is cl: false once they exceed it, or end short of it (RFC 9113, 8.1.1:
// such a message is malformed and must not be forwarded).
func bodyFits(got *int64, cl int64, n int, end bool) bool {
	*got += int64(n)
	return cl < 0 || (*got <= cl && (!end || *got == cl))
}

// respReset is told by the client's writer that it reset the response.
func (s *h2stream) respReset() {
	s.mu.Lock()
	s.respGone = true
	done := s.done
	s.mu.Unlock()
	if done {
		s.down.release(s)
	}
}

// keepForResponse reports whether a finished stream must stay with its
// client connection: the last of its response (the upstream's complete
// answer, the relay's own, or a reset) is queued but not yet written. The
// client's WINDOW_UPDATEs must find it, and it counts against h2MaxStreams
// until then, as net/http counts a stream until its response is written:
// else a client that reads nothing makes the relay queue answers without
// bound.
func (s *h2stream) keepForResponse() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return (s.respEndIn || s.respLast) && !s.respEndOut && !s.respGone
}

// lastToClientLocked queues items, the relay's own end of the client's
// response (an answer or a reset): the stream stays with its client
// connection until they are written (keepForResponse).
func (s *h2stream) lastToClientLocked(items ...h2item) {
	s.respLast = true
	if !s.down.w.inbox.put(items...) {
		s.respGone = true // the connection is gone: nothing to wait for
	}
}

// requestEnded reports whether the client ended its side of the stream:
// it is half-closed (remote), and may carry no more DATA or HEADERS.
func (s *h2stream) requestEnded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reqEndIn
}

// resetByRelay reports whether the stream ended, for its client, with a
// reset of the relay's own: not with both END_STREAMs nor its client's
// reset.
func (s *h2stream) resetByRelay() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.clientGone && !(s.reqEndIn && s.respEndOut)
}

// upstreamLive reports whether the stream went to an upstream and is not
// over yet: ending it early costs that upstream a stream.
func (s *h2stream) upstreamLive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.up != nil && !s.done
}

// clientReset ends the stream because the client reset it or went away.
func (s *h2stream) clientReset() {
	s.mu.Lock()
	s.clientGone = true
	if s.done {
		// Perhaps one still writing its response (keepForResponse): the
		// client does not want the rest.
		gone := s.respGone
		s.respGone = true
		s.mu.Unlock()
		if !gone {
			s.down.w.inbox.put(h2item{kind: h2Reset, s: s, o: &s.resp, quiet: true, ctl: true})
			s.down.release(s)
		}
		return
	}
	s.done = true
	complete := s.respEndOut
	if s.up != nil && !(s.reqEndOut && s.respEndIn) {
		s.resetUpLocked(http2.ErrCodeCancel)
	}
	// A control item: a client resetting streams in a loop without
	// reading queues one each, which its reader bounds.
	s.down.w.inbox.put(h2item{kind: h2Reset, s: s, o: &s.resp, quiet: true, ctl: true})
	answered := s.answered
	if !complete {
		s.failed = true
		if !answered {
			s.status = 0
		}
	}
	s.mu.Unlock()
	if !complete {
		if answered {
			s.cutShort()
		} else {
			s.srv().cfg.Metrics.proxyError(s.srv().cfg.Direction, ReasonCanceled)
			s.logFailure(ReasonCanceled, 0, nil)
		}
	}
	s.finish()
}

// upstreamReset relays the upstream's RST_STREAM to the client.
func (s *h2stream) upstreamReset(c *h2up, code http2.ErrCode) {
	s.mu.Lock()
	if s.done || s.up != c {
		s.mu.Unlock()
		return
	}
	if code == http2.ErrCodeRefusedStream && !s.answered {
		s.mu.Unlock()
		s.refused(c)
		return
	}
	s.done = true
	complete := s.respEndIn
	if !complete {
		s.failed = true
		if s.answered {
			s.cutShort()
		}
	}
	s.countLocked()
	// The upstream's stream is closed: what is still queued for it (body
	// held back by its window) must not follow the RST_STREAM.
	c.w.inbox.put(h2item{kind: h2Reset, s: s, o: s.req, quiet: true})
	// Relayed unless the client's side of the stream is closed already:
	// after a complete answer, NO_ERROR tells the client to stop sending.
	if !(s.respEndOut && s.reqEndIn) {
		// Behind what the upstream's reader passes on before it.
		s.respLast = true
		c.batch.add(&s.down.w.inbox, h2item{kind: h2Reset, s: s, o: &s.resp, code: code})
	}
	s.mu.Unlock()
	s.finish()
}

// refused handles a stream the upstream did not process (REFUSED_STREAM,
// or above a GOAWAY's last stream): a request without a body is sent again
// elsewhere, as net/http's transport does; one with a body, whose bytes
// are gone, is refused to the client, which may retry.
func (s *h2stream) refused(c *h2up) {
	s.mu.Lock()
	if s.done || s.up != c {
		s.mu.Unlock()
		return
	}
	if s.endOnHeaders {
		// Sent again at most h2MaxRefusals times, each a little later:
		// an upstream that refuses everything must not get the request
		// thousands of times a second.
		retry := s.refusals < h2MaxRefusals
		s.refusals++
		wait := time.Duration(s.refusals) * h2RefusedBackoff
		s.up = nil
		s.pending = nil
		s.reqEndOut = false
		if s.timer != nil {
			s.timer.Stop()
		}
		pick := s.pick
		s.pick = H2Pick{}
		s.mu.Unlock()
		c.release(s)
		if pick.Done != nil {
			pick.Done()
		}
		if !retry {
			s.fail(failure{http.StatusServiceUnavailable, grpcUnavailable, ReasonBadGateway}, errStreamRefused)
			return
		}
		time.AfterFunc(wait, s.dispatch) // dispatch drops a stream done meanwhile
		return
	}
	s.done = true
	s.failed = true
	s.countLocked()
	// The upstream did not take the stream: nothing more of its body goes
	// there.
	c.w.inbox.put(h2item{kind: h2Reset, s: s, o: s.req, quiet: true})
	s.lastToClientLocked(h2item{kind: h2Reset, s: s, o: &s.resp, code: http2.ErrCodeRefusedStream})
	s.mu.Unlock()
	s.finish()
}

// upstreamLost ends the stream because its upstream connection did: a
// stream without an answer yet gets the proxy's, one cut off mid-answer is
// reset.
func (s *h2stream) upstreamLost(c *h2up, err error) {
	s.mu.Lock()
	if s.done || s.up != c {
		s.mu.Unlock()
		return
	}
	if s.respEndOut || s.respEndIn {
		s.done = true
		s.mu.Unlock()
		s.finish()
		return
	}
	if s.answered {
		s.done = true
		s.failed = true
		s.cutShort()
		s.countLocked()
		s.lastToClientLocked(h2item{kind: h2Reset, s: s, o: &s.resp, code: http2.ErrCodeInternal})
		s.mu.Unlock()
		s.finish()
		return
	}
	s.mu.Unlock()
	s.fail(classify(err), err)
}

func (s *h2stream) timedOut() {
	s.fail(classify(errResponseTimeout), errResponseTimeout)
}

// errResponseTimeout is a net.Error timeout, as classify wants.
var errResponseTimeout = timeoutError{}

type timeoutError struct{}

func (timeoutError) Error() string   { return "timeout awaiting response headers" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// resetBoth ends a stream that broke the protocol on either hop.
func (s *h2stream) resetBoth(code http2.ErrCode) {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return
	}
	s.done = true
	s.failed = true
	if s.up != nil {
		s.resetUpLocked(code)
	}
	s.lastToClientLocked(h2item{kind: h2Reset, s: s, o: &s.resp, code: code})
	s.mu.Unlock()
	s.finish()
}

// fail answers the stream itself, counting and logging why; a client that
// has an answer already, or whose stream was canceled, is reset instead.
// A response timeout whose response came in the meantime is no failure.
func (s *h2stream) fail(f failure, err error) {
	s.mu.Lock()
	if s.done || (errors.Is(err, errResponseTimeout) && s.final) {
		// The response headers came as the timer fired: not late.
		s.mu.Unlock()
		return
	}
	s.done = true
	s.failed = true
	if s.up != nil && !(s.reqEndOut && s.respEndIn) {
		s.resetUpLocked(http2.ErrCodeCancel)
	}
	status := 0
	answer := !s.answered && f.reason != ReasonCanceled
	if answer {
		status = f.status
		if s.grpc {
			status = http.StatusOK
			s.grpcStatus = strconv.Itoa(f.grpc)
		}
		s.status = status
		s.headersAt = time.Now()
		s.answered = true
	}
	// Counted before the client can see the answer, as net/http's
	// handler is.
	s.srv().cfg.Metrics.proxyError(s.srv().cfg.Direction, f.reason)
	s.logFailure(f.reason, status, err)
	s.countLocked()
	if answer {
		s.lastToClientLocked(s.answer(f)...)
	} else {
		// No answer of ours follows: the client must not wait for one.
		s.lastToClientLocked(h2item{kind: h2Reset, s: s, o: &s.resp, code: http2.ErrCodeCancel})
	}
	s.mu.Unlock()
	s.finish()
}

func (s *h2stream) logFailure(reason string, status int, err error) {
	// At most once a second per reason, as the HTTP/1 relay's: under a
	// flood a line per stream would cost more than the stream.
	s.srv().logLimited(s.srv().h2FailedLog, "request failed", reason,
		zap.String("method", s.method), authorityField(s.labels.Authority), zap.Int("status", status), zap.Error(err))
}

func (s *h2stream) cutShort() {
	s.srv().log.Info("response cut short",
		zap.String("method", s.method), authorityField(s.labels.Authority), zap.Int("status", s.status))
}

// answer is the proxy's own response, as failure.write makes it for
// net/http: gRPC gets a trailers-only response.
func (s *h2stream) answer(f failure) []h2item {
	fields := []hpack.HeaderField{{Name: ErrorHeader, Value: f.reason}}
	var items []h2item
	if s.grpc {
		fields = append([]hpack.HeaderField{{Name: ":status", Value: "200"}}, append(fields,
			hpack.HeaderField{Name: "content-type", Value: "application/grpc"},
			hpack.HeaderField{Name: "grpc-status", Value: strconv.Itoa(f.grpc)},
			hpack.HeaderField{Name: "grpc-message", Value: "meshproxy: " + f.reason})...)
		items = append(items, h2item{kind: h2Headers, s: s, o: &s.resp, fields: fields, end: true})
	} else {
		body := "meshproxy: " + f.reason + "\n"
		fields = append([]hpack.HeaderField{{Name: ":status", Value: strconv.Itoa(f.status)}}, append(fields,
			hpack.HeaderField{Name: "content-type", Value: "text/plain; charset=utf-8"},
			hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(len(body))})...)
		items = append(items, h2item{kind: h2Headers, s: s, o: &s.resp, fields: fields},
			h2item{kind: h2Data, s: s, o: &s.resp, data: []byte(body), end: true})
	}
	if !s.reqEndIn {
		// The answer is complete; the rest of the request is not wanted.
		items = append(items, h2item{kind: h2Reset, s: s, o: &s.resp, code: http2.ErrCodeNo})
	}
	return items
}

// finish counts the stream and frees its place on both connections (on
// the upstream's, unless held: unhold does). It runs once, after done was
// set.
func (s *h2stream) finish() {
	s.closed.Store(true)
	s.mu.Lock()
	if s.timer != nil {
		s.timer.Stop()
	}
	up, pick := s.up, s.pick
	s.pick = H2Pick{}
	for i := range s.pending {
		s.pending[i].release(s.down.bufs)
	}
	s.pending = nil
	// Nothing sends a finished stream again (attach, refused); a held one
	// lives on until its upstream confirms the reset and must not keep
	// its client's headers, up to h2MaxHeaderList, meanwhile.
	s.fields = nil
	s.countLocked()
	if s.respIdle != nil {
		s.respIdle.Stop()
	}
	s.returnExtraLocked(s.respExtra)
	s.mu.Unlock()
	if pick.Done != nil {
		pick.Done()
	}
	if up != nil && s.hold.Load() == holdNone {
		up.release(s)
	}
	s.down.release(s)
}

// resetUpLocked resets the stream upstream with code and holds it: it
// keeps its slot on the upstream connection and counts against its
// client's max streams until the upstream confirms the reset (a PING
// written after it is acknowledged), ends the stream itself, or closes,
// or h2ResetHold passes. Called with s.mu held, before finish.
func (s *h2stream) resetUpLocked(code http2.ErrCode) {
	s.heldUp = s.up
	s.hold.Store(holdHeld)
	if !s.up.w.inbox.put(h2item{kind: h2Reset, s: s, o: s.req, code: code, hold: true}) {
		// The connection is gone: nothing to wait for.
		s.hold.Store(holdNone)
		return
	}
	s.holdTimer = time.AfterFunc(h2ResetHold, s.holdExpired)
}

// holdExpired ends a hold the upstream did not confirm in h2ResetHold.
func (s *h2stream) holdExpired() {
	if s.unhold() {
		s.heldUp.pool.holdsExpired.Add(1)
	}
}

// unhold releases a held stream's slots, once: it reports whether this
// call did.
func (s *h2stream) unhold() bool {
	if !s.hold.CompareAndSwap(holdHeld, holdReleased) {
		return false
	}
	s.mu.Lock()
	up := s.up
	if s.holdTimer != nil {
		// Else it would keep the stream for h2ResetHold: a client
		// resetting streams in a loop would pin thousands of them.
		s.holdTimer.Stop()
		s.holdTimer = nil
	}
	s.mu.Unlock()
	if up != nil {
		up.release(s)
	}
	s.down.unholdSlot(s)
	return true
}

// unheld reports whether a stream that was held is no more.
func (s *h2stream) unheld() bool { return s.hold.Load() == holdReleased }

// upstreamDone is told that the upstream ended the stream (RST_STREAM or
// END_STREAM): a held stream is released.
func (s *h2stream) upstreamDone() {
	if s.hold.Load() == holdHeld {
		s.unhold()
	}
}

// creditTo returns where the window of credit bytes that c's writer wrote
// of s goes back to, the WINDOW_UPDATE to give there (0: none) and the
// window the sender then has.
func (s *h2stream) creditTo(c *h2conn, credit uint32) (*h2writer, *h2out, uint32, uint32) {
	if c.upstream {
		return &s.down.w, &s.resp, credit, h2StreamWindow
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.up == nil || s.done {
		return nil, nil, 0, 0
	}
	give := s.respCreditLocked(int64(credit))
	return &s.up.w, s.req, uint32(give), uint32(h2UpStreamWindow + s.respExtra)
}

// respCreditLocked returns how much of credit, bytes its client read, the
// response stream gives back to its upstream. A shrinking stream keeps
// what it needs to get back to h2UpStreamWindow (the upstream used that
// window; not renewed, it is returned to the budgets). Else the window
// grows by h2RespGrowth times what was read, to at most h2StreamWindow,
// within h2RespBudget: a stream grows about as far as its flow shows it
// needs, as with TCP's slow start.
func (s *h2stream) respCreditLocked(credit int64) int64 {
	s.respCredited = true
	if s.respShrink {
		k := min(credit, s.respExtra)
		s.returnExtraLocked(k)
		s.respShrink = s.respExtra > 0
		return credit - k
	}
	if s.respEndIn { // no growth for what is all here
		return credit
	}
	grow := takeUpTo(&s.down.respBudget, min(h2RespGrowth*credit, h2StreamWindow-h2UpStreamWindow-s.respExtra))
	if grow > 0 {
		s.respExtra += grow
		if s.respIdle == nil {
			s.respIdle = time.AfterFunc(h2RespIdleAfter, s.respIdleCheck)
		}
	}
	return credit + grow
}

// respIdleCheck runs every h2RespIdleAfter while the response window is
// grown: once a period passed in which the upstream could send (it had
// window, and got none back that it may not have used yet) and sent no
// DATA, the stream is idle. One whose upstream waits for its client to
// read is not: its window is what keeps it going. An idle stream's growth
// moves to h2RespIdleBudget, as far as that allows, so that other streams
// may grow, and the window is not renewed until it is back to
// h2UpStreamWindow.
func (s *h2stream) respIdleCheck() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done || s.respShrink || s.respExtra == 0 {
		s.respIdle = nil
		return
	}
	if s.respData || s.respCredited || s.respRecv.Load() < h2IdleWindow {
		s.respData, s.respCredited = false, false
		s.respIdle.Reset(h2RespIdleAfter)
		return
	}
	s.respIdle = nil
	s.respShrink = true
	d := s.down
	moved := takeUpTo(&d.respIdle, s.respExtra-s.respIdleExtra)
	s.respIdleExtra += moved
	d.respBudget.Add(moved)
}

// returnExtraLocked gives n of the response window's growth back to the
// budgets it came from: the idle one first.
func (s *h2stream) returnExtraLocked(n int64) {
	if n <= 0 {
		return
	}
	idle := min(n, s.respIdleExtra)
	s.respIdleExtra -= idle
	s.respExtra -= n
	s.down.respIdle.Add(idle)
	s.down.respBudget.Add(n - idle)
}

// takeUpTo takes at most n from budget, never below zero, and returns
// what it took.
func takeUpTo(budget *atomic.Int64, n int64) int64 {
	for {
		v := budget.Load()
		k := min(v, n)
		if k <= 0 {
			return 0
		}
		if budget.CompareAndSwap(v, v-k) {
			return k
		}
	}
}

// countLocked records the exchange in the request metrics, once: when
// the upstream's answer is complete (before the client can have it, as
// net/http's handler counts before it returns), or else when the stream
// ends.
func (s *h2stream) countLocked() {
	if s.counted {
		return
	}
	s.counted = true
	labels := s.labels
	if s.serverID != "" {
		labels.ServerID = s.serverID
	}
	ex := &exchange{start: s.start, headersAt: s.headersAt, status: s.status, grpcStatus: s.grpcStatus, failed: s.failed}
	s.srv().cfg.Metrics.record(labels, ex)
}

// otherWriter is the writer of the hop s's frames written by c came from.
func (s *h2stream) otherWriter(c *h2conn) (*h2writer, *h2out) {
	if c.upstream {
		return &s.down.w, &s.resp
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.up == nil || s.done {
		return nil, nil
	}
	return &s.up.w, s.req
}

// filterFields copies fields, which the framer reuses, without the
// hop-by-hop ones (those HTTP/2 forbids, RFC 9113 8.2.2, and the proxy-*
// ones), as the HTTP/1 relay does; te survives only as "trailers", which
// gRPC requires.
func filterFields(fields []hpack.HeaderField, response bool) []hpack.HeaderField {
	out := make([]hpack.HeaderField, 0, len(fields))
	for _, f := range fields {
		if f.Name == "te" {
			if response || !strings.EqualFold(f.Value, "trailers") {
				continue
			}
		} else if hopByHopName(f.Name) {
			continue
		}
		out = append(out, f)
	}
	return out
}

func fieldValue(fields []hpack.HeaderField, name string) string {
	for _, f := range fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}
