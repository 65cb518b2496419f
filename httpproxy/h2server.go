package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// h2down is a client's connection relayed frame by frame: its reader runs
// in ServeConn's goroutine, its writer in its own.
type h2down struct {
	h2conn
	srv  *Server
	info *Conn

	mu        sync.Mutex
	streams   map[uint32]*h2stream
	lastID    uint32
	goingAway bool
	closing   bool // the relay ends the connection: its read error is ours
	idle      *time.Timer
	// The last streams the relay reset (see ignoreLateLocked).
	ignored   [h2Ignored]uint32
	ignoredAt int
	// held counts the streams reset upstream and not yet confirmed there
	// (h2stream.hold) that have left streams: they take a slot of
	// h2MaxStreams, each once, though their client sees them closed.
	held int
	// queue holds, in order, the client's streams waiting for a slot that
	// held streams take (see slotsLocked); they are in streams too. The
	// client's own limit on its open streams bounds it, as net/http's
	// queue of handlers not yet started. starting: startQueued runs.
	queue    []*h2stream
	starting bool
	// waiting: queue is not empty; read by the upstreams' writers
	// (h2up.urgentLocked) without mu.
	waiting atomic.Bool
	// heldOn counts the held streams by the upstream connection that
	// holds them: those to wake when streams start waiting.
	heldOn map[*h2up]int

	resets h2resetBudget
	// respBudget and respIdle are what is left of h2RespBudget and
	// h2RespIdleBudget, the growth of response windows beyond
	// h2UpStreamWindow (h2stream.respCreditLocked).
	respBudget, respIdle atomic.Int64
}

// unholdSlot frees the slot of s, a held stream the upstream confirmed,
// if it left streams held (release).
func (d *h2down) unholdSlot(s *h2stream) {
	d.mu.Lock()
	freed := s.heldCounted
	if freed {
		s.heldCounted = false
		d.held--
		if d.heldOn[s.heldUp]--; d.heldOn[s.heldUp] <= 0 {
			delete(d.heldOn, s.heldUp)
		}
	}
	waiting := len(d.queue) > 0
	d.mu.Unlock()
	if freed && waiting {
		d.startQueued()
	}
}

// slotsLocked is the number of h2MaxStreams' slots taken: the client's
// streams not waiting in queue (those sent upstream, and those the relay
// is answering itself) and the held ones.
func (d *h2down) slotsLocked() int {
	return len(d.streams) - len(d.queue) + d.held
}

// startQueued dispatches the streams waiting for a slot, in order, while
// there are free ones. A call made while another runs (a dispatch that
// fails at once releases its stream) leaves the work to that one.
func (d *h2down) startQueued() {
	d.mu.Lock()
	if d.starting {
		d.mu.Unlock()
		return
	}
	d.starting = true
	for len(d.queue) > 0 && d.slotsLocked() < h2MaxStreams {
		s := d.queue[0]
		d.queue[0] = nil
		d.queue = d.queue[1:]
		s.queued = false
		d.waiting.Store(len(d.queue) > 0)
		d.mu.Unlock()
		s.dispatch() // drops a stream that ended meanwhile
		d.mu.Lock()
	}
	d.starting = false
	d.mu.Unlock()
}

// unqueueLocked takes s, a stream that ended while it waited for a slot,
// out of the queue: nothing of it went upstream.
func (d *h2down) unqueueLocked(s *h2stream) {
	if !s.queued {
		return
	}
	s.queued = false
	if i := slices.Index(d.queue, s); i >= 0 {
		d.queue = slices.Delete(d.queue, i, i+1)
	}
	d.waiting.Store(len(d.queue) > 0)
}

// enqueueLocked puts s, a new stream, in the queue. It returns the
// upstream connections holding the client's held slots when s is the
// first to wait: they may then spend a little more of their ping budget
// to confirm the resets sooner (see h2MaxPingStrikes).
func (d *h2down) enqueueLocked(s *h2stream) []*h2up {
	s.queued = true
	d.queue = append(d.queue, s)
	if d.waiting.Swap(true) {
		return nil
	}
	ups := make([]*h2up, 0, len(d.heldOn))
	for c := range d.heldOn {
		ups = append(ups, c)
	}
	return ups
}

// h2resetBudget is a token bucket of the streams already sent upstream
// whose protocol a connection's client may break (the relay then resets
// them): h2ResetBurst at once, then h2ResetRate a second. A client's own
// RST_STREAM draws nothing: what it costs the upstream is bounded by the
// slot the stream keeps until the upstream confirms (h2stream.hold), and
// well-behaved clients send one per expired deadline or canceled call,
// thousands a second when an upstream is slow. A protocol error is never
// a well-behaved client's, so charging it costs no such client anything,
// and it stays bounded should a slot not be held (the "MadeYouReset"
// pattern of making the server reset).
type h2resetBudget struct {
	mu     sync.Mutex // the reader's, and the writer's (window overflows)
	tokens float64
	at     time.Time
}

const (
	h2ResetBurst = 1000
	h2ResetRate  = 200
)

func (b *h2resetBudget) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.at.IsZero() {
		b.tokens = h2ResetBurst
	} else {
		b.tokens = min(h2ResetBurst, b.tokens+now.Sub(b.at).Seconds()*h2ResetRate)
	}
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// errRapidReset ends a connection whose client ends streams already sent
// upstream faster than its reset budget allows.
var errRapidReset = h2ConnError{http2.ErrCodeEnhanceYourCalm, errors.New("too many streams broken after they were sent upstream")}

// chargeEnd charges the reset budget for s, a stream its client ends
// early by breaking the protocol on it. One already sent upstream and not
// yet over cost the shared upstream a stream, though it ends at once here
// (the rapid-reset pattern, CVE-2023-44487, through protocol errors).
// errRapidReset once the budget is spent.
func (d *h2down) chargeEnd(s *h2stream) error {
	if s.upstreamLive() && !d.resets.allow(time.Now()) {
		return errRapidReset
	}
	return nil
}

// clientBroke resets s, a stream its client broke the protocol on, with
// code, charging the reset budget.
func (d *h2down) clientBroke(s *h2stream, code http2.ErrCode) error {
	if err := d.chargeEnd(s); err != nil {
		return err
	}
	s.resetBoth(code)
	return nil
}

// h2ConnError is a connection error the relay found in what a peer sent.
type h2ConnError struct {
	code http2.ErrCode
	err  error
}

func (e h2ConnError) Error() string { return fmt.Sprintf("http2 %v: %v", e.code, e.err) }
func (e h2ConnError) Unwrap() error { return e.err }

var errBadPreface = errors.New("not the HTTP/2 client preface")

// serveH2 relays one prior-knowledge HTTP/2 client connection until it
// ends, the server shuts down, or ctx is done.
func (s *Server) serveH2(ctx context.Context, nc net.Conn, info *Conn) {
	d := &h2down{srv: s, info: info, streams: map[uint32]*h2stream{}}
	d.setup(nc, s.h2bufs, false, s.cfg.WriteTimeout)
	d.respBudget.Store(h2RespBudget)
	d.respIdle.Store(h2RespIdleBudget)
	if !s.h2.add(d) {
		_ = nc.Close()
		return
	}
	defer s.h2.remove(d)
	d.idle = time.AfterFunc(s.cfg.IdleTimeout, d.idleTimeout)
	go d.w.run()
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	defer stop()
	d.teardown(d.read())
}

func (d *h2down) read() error {
	_ = d.nc.SetReadDeadline(time.Now().Add(d.srv.cfg.ReadHeaderTimeout))
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(d.br, preface[:]); err != nil {
		return err
	}
	if string(preface[:]) != http2.ClientPreface {
		return h2ConnError{http2.ErrCodeProtocol, errBadPreface}
	}
	d.w.inbox.put(h2item{kind: h2Own})
	f, err := d.rf.ReadFrame()
	if err != nil {
		return frameError(err)
	}
	if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
		return h2ConnError{http2.ErrCodeProtocol, errors.New("the first frame is not SETTINGS")}
	}
	_ = d.nc.SetReadDeadline(time.Time{})
	// Declared once: errors.As takes its address, which moves it to the
	// heap, and per frame that was an allocation of every frame read.
	var se http2.StreamError
	for {
		if err := d.frame(f); err != nil {
			return err
		}
		// Resets and windows the client's frames queued for it: a client
		// that does not read them must not grow the queue.
		if d.w.inbox.overControl() {
			return errTooManyControl
		}
		f, err = d.readFrame()
		for errors.As(err, &se) {
			if s := d.lookup(se.StreamID); s != nil {
				if err := d.clientBroke(s, se.Code); err != nil {
					return err
				}
			} else {
				// A rejected HEADERS opened the stream all the same (RFC
				// 9113, 5.1.1): the frames the client sent on it before
				// hearing of the reset are ignored, not an error.
				d.opened(se.StreamID)
				d.refuse(se.StreamID, se.Code)
			}
			if d.w.inbox.overControl() {
				return errTooManyControl
			}
			f, err = d.readFrame()
		}
		if err != nil {
			return frameError(err)
		}
	}
}

// frameError makes the framer's errors connection errors where they are.
func frameError(err error) error {
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		return h2ConnError{http2.ErrCode(ce), err}
	case errors.Is(err, http2.ErrFrameTooLarge):
		return h2ConnError{http2.ErrCodeFrameSize, err}
	}
	return err
}

func (d *h2down) frame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return d.headers(f)
	case *http2.DataFrame:
		return d.data(f)
	case *http2.RSTStreamFrame:
		if s := d.lookup(f.StreamID); s != nil {
			// Not charged: the stream keeps its slot until the upstream
			// confirms the reset (see h2resetBudget).
			s.clientReset()
		} else if d.idleStream(f.StreamID) {
			return h2ConnError{http2.ErrCodeProtocol, errors.New("RST_STREAM on an idle stream")}
		}
	case *http2.SettingsFrame:
		return settingsFrame(&d.h2conn, f)
	case *http2.PingFrame:
		if !f.IsAck() && !d.w.inbox.putControl(h2item{kind: h2Ping, ping: f.Data}) {
			return errTooManyControl
		}
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			d.w.inbox.putControl(h2item{kind: h2PeerWindow, n: f.Increment})
		} else if s := d.lookup(f.StreamID); s != nil {
			d.w.inbox.putControl(h2item{kind: h2PeerWindow, s: s, o: &s.resp, n: f.Increment})
		} else if d.idleStream(f.StreamID) {
			return h2ConnError{http2.ErrCodeProtocol, errors.New("WINDOW_UPDATE on an idle stream")}
		}
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			// A stream error (RFC 9113, 5.3.1).
			if s := d.lookup(f.StreamID); s != nil {
				return d.clientBroke(s, http2.ErrCodeProtocol)
			} else {
				d.refuse(f.StreamID, http2.ErrCodeProtocol)
			}
		}
	case *http2.PushPromiseFrame:
		return h2ConnError{http2.ErrCodeProtocol, errors.New("PUSH_PROMISE from a client")}
	}
	// GOAWAY from a client: it opens nothing more and ends the
	// connection itself. Other PRIORITY and unknown frames are ignored.
	return nil
}

// settingsFrame hands a peer's SETTINGS to the connection's writer, which
// applies them and acknowledges.
func settingsFrame(c *h2conn, f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	if f.NumSettings() > h2MaxSettings {
		return h2ConnError{http2.ErrCodeProtocol, fmt.Errorf("SETTINGS with %d entries", f.NumSettings())}
	}
	if err := f.ForeachSetting(func(s http2.Setting) error { return s.Valid() }); err != nil {
		return frameError(err)
	}
	var ss []http2.Setting
	_ = f.ForeachSetting(func(s http2.Setting) error { ss = append(ss, s); return nil })
	if !c.w.inbox.putControl(h2item{kind: h2Settings, settings: ss}) {
		return errTooManyControl
	}
	return nil
}

func (d *h2down) lookup(id uint32) *h2stream {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.streams[id]
}

// opened records id, a client stream the relay did not take, as used.
func (d *h2down) opened(id uint32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if id%2 == 1 && id > d.lastID {
		d.lastID = id
	}
}

func (d *h2down) idleStream(id uint32) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return id > d.lastID
}

// headers starts a stream, or passes on the request's trailers.
func (d *h2down) headers(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if s := d.lookup(id); s != nil {
		if s.requestEnded() {
			return d.clientBroke(s, http2.ErrCodeStreamClosed) // RFC 9113, 5.1: half-closed (remote)
		}
		if f.Truncated {
			// Trailers cut at the limit must not be passed on short.
			if err := d.chargeEnd(s); err != nil {
				return err
			}
			s.fail(failure{http.StatusRequestHeaderFieldsTooLarge, grpcUnavailable, ReasonHeaders}, errHeadersTooLarge)
			return nil
		}
		if !f.StreamEnded() {
			return d.clientBroke(s, http2.ErrCodeProtocol)
		}
		if !bodyFits(&s.reqGot, s.reqCL, 0, true) {
			return d.clientBroke(s, http2.ErrCodeProtocol) // the body ended short
		}
		s.sendReq(h2item{kind: h2Headers, fields: filterFields(f.RegularFields(), false), end: true})
		return nil
	}
	d.mu.Lock()
	if id%2 == 0 {
		d.mu.Unlock()
		return h2ConnError{http2.ErrCodeProtocol, fmt.Errorf("HEADERS opening stream %d", id)}
	}
	if id <= d.lastID {
		d.mu.Unlock()
		if f.PseudoValue("method") != "" {
			// A request: no stream may open below the last one (RFC
			// 9113, 5.1.1).
			return h2ConnError{http2.ErrCodeProtocol, fmt.Errorf("HEADERS opening stream %d, not above the last one", id)}
		}
		d.closedStream(id) // trailers of a stream that has ended here
		return nil
	}
	d.lastID = id
	// Over the client's own limit (streams waiting for a slot count, held
	// ones do not: the client sees them closed).
	if d.goingAway || len(d.streams) >= h2MaxStreams {
		d.mu.Unlock()
		d.refuse(id, http2.ErrCodeRefusedStream)
		return nil
	}
	method, path := f.PseudoValue("method"), f.PseudoValue("path")
	cl, clOK := contentLength(f.RegularFields())
	if method == "" || f.PseudoValue("status") != "" || f.PseudoValue("protocol") != "" ||
		(method != "CONNECT" && (path == "" || f.PseudoValue("scheme") == "")) ||
		!httpguts.ValidHeaderFieldName(method) || // a method is a token
		(path != "" && path[0] != '/' && !(method == "OPTIONS" && path == "*")) ||
		!clOK || (f.StreamEnded() && cl > 0) ||
		(f.HasPriority() && f.Priority.StreamDep == id) { // RFC 9113, 5.3.1
		d.mu.Unlock()
		d.refuse(id, http2.ErrCodeProtocol)
		return nil
	}
	s := d.newStream(f)
	d.streams[id] = s
	d.idle.Stop()
	// A request for an upstream waits while held streams take the slots
	// (or others wait before it): refused, a healthy call would fail for
	// the resets of others the client cannot see.
	wait := !f.Truncated && d.info.Refuse == "" && method != "CONNECT" &&
		(len(d.queue) > 0 || d.slotsLocked() > h2MaxStreams)
	var wake []*h2up
	if wait {
		wake = d.enqueueLocked(s)
	}
	d.mu.Unlock()

	switch {
	case wait:
		for _, c := range wake {
			c.wakePing()
		}
		d.startQueued() // a slot may have come free meanwhile
	case f.Truncated:
		s.fail(failure{status: 431, grpc: grpcUnavailable, reason: ReasonHeaders}, nil)
	case d.info.Refuse != "":
		// One answer is enough: a refused client does not get to hold
		// the connection.
		s.fail(refusal(d.info.Refuse), nil)
		d.shutdown()
	case method == "CONNECT":
		s.fail(failure{405, grpcUnavailable, ReasonMethod}, nil)
	default:
		s.dispatch()
	}
	return nil
}

func (d *h2down) newStream(f *http2.MetaHeadersFrame) *h2stream {
	s := &h2stream{
		down:         d,
		downID:       f.StreamID,
		fields:       filterFields(f.Fields, false),
		endOnHeaders: f.StreamEnded(),
		method:       f.PseudoValue("method"),
		labels:       d.info.Labels,
		start:        time.Now(),
		reqEndIn:     f.StreamEnded(),
		respCL:       -1,
	}
	s.reqCL, _ = contentLength(s.fields) // checked by headers
	s.grpc = isGRPCType(fieldValue(s.fields, "content-type"))
	s.reqRecv.Store(h2StreamWindow)
	s.respRecv.Store(h2UpStreamWindow)
	if d.info.Refuse == "" {
		// A refused client's authority names nothing it reached: it gets
		// no series of its own.
		s.labels.Authority = f.PseudoValue("authority")
		if s.labels.Authority == "" {
			s.labels.Authority = fieldValue(s.fields, "host")
		}
	}
	return s
}

// refuse resets a stream the relay does not take.
func (d *h2down) refuse(id uint32, code http2.ErrCode) {
	d.mu.Lock()
	d.ignoreLateLocked(id)
	d.mu.Unlock()
	s := &h2stream{down: d, downID: id}
	d.w.inbox.putControl(h2item{kind: h2Reset, s: s, o: &s.resp, code: code})
}

// h2Ignored is how many of the streams it reset last a connection
// remembers, to ignore what their client sent before it heard.
const h2Ignored = 32

// ignoreLateLocked records id, a stream the relay resets: the frames the
// client sent on it before hearing of the reset are ignored (RFC 9113,
// 5.1). Only the last h2Ignored are kept: a later frame on an older one
// gets RST_STREAM, which such a client ignores.
func (d *h2down) ignoreLateLocked(id uint32) {
	d.ignored[d.ignoredAt] = id
	d.ignoredAt = (d.ignoredAt + 1) % h2Ignored
}

// closedStream answers a frame on a closed stream (not the client's own
// in a half-closed one) with STREAM_CLOSED (RFC 9113, 5.1), unless the
// relay reset that stream itself.
func (d *h2down) closedStream(id uint32) {
	d.mu.Lock()
	ignore := slices.Contains(d.ignored[:], id)
	d.mu.Unlock()
	if !ignore {
		d.refuse(id, http2.ErrCodeStreamClosed) // and ignores the next ones
	}
}

func (d *h2down) data(f *http2.DataFrame) error {
	if !d.received(f.Length) {
		return h2ConnError{http2.ErrCodeFlowControl, errors.New("connection window overrun")}
	}
	// What is not forwarded gives its connection window back at once;
	// what is, when it has left the relay (h2item.release).
	s := d.lookup(f.StreamID)
	if s == nil {
		if d.idleStream(f.StreamID) {
			return h2ConnError{http2.ErrCodeProtocol, errors.New("DATA on an idle stream")}
		}
		d.giveBack(f.Length)
		d.closedStream(f.StreamID)
		return nil
	}
	if s.requestEnded() {
		d.giveBack(f.Length)
		return d.clientBroke(s, http2.ErrCodeStreamClosed) // RFC 9113, 5.1: half-closed (remote)
	}
	if s.reqRecv.Add(-int32(f.Length)) < 0 {
		d.giveBack(f.Length)
		return d.clientBroke(s, http2.ErrCodeFlowControl)
	}
	data := f.Data()
	if pad := f.Length - uint32(len(data)); pad > 0 {
		// Padding never reaches the other hop: its window comes back now,
		// the connection's at once and the stream's in batches.
		d.giveBack(pad)
		if !d.creditPadding(s, &s.resp, &s.reqPad, pad) {
			return errTooManyControl
		}
	}
	if !bodyFits(&s.reqGot, s.reqCL, len(data), f.StreamEnded()) {
		// Not forwarded (RFC 9113, 8.1.1): the body disagrees with its
		// content-length.
		d.giveBack(uint32(len(data)))
		return d.clientBroke(s, http2.ErrCodeProtocol)
	}
	if len(data) > 0 || f.StreamEnded() {
		it := d.copyData(s, data, f.StreamEnded())
		if s.overHeld("src") {
			it.release(d.bufs)
			return d.clientBroke(s, http2.ErrCodeEnhanceYourCalm)
		}
		s.sendReq(it)
	}
	return nil
}

// release forgets a finished stream.
func (d *h2down) release(s *h2stream) {
	keep := s.keepForResponse()
	d.mu.Lock()
	d.unqueueLocked(s)
	if keep {
		d.mu.Unlock()
		return // released again once written (ended, respReset)
	}
	if d.streams[s.downID] != s {
		d.mu.Unlock()
		return
	}
	delete(d.streams, s.downID)
	held := s.hold.Load() == holdHeld
	if held {
		// It keeps its slot until unholdSlot.
		s.heldCounted = true
		d.held++
		if d.heldOn == nil {
			d.heldOn = map[*h2up]int{}
		}
		d.heldOn[s.heldUp]++
	}
	if s.resetByRelay() {
		d.ignoreLateLocked(s.downID)
	}
	n, going := len(d.streams), d.goingAway
	if n == 0 && !going {
		d.idle.Reset(d.srv.cfg.IdleTimeout)
	}
	waiting := len(d.queue) > 0
	d.mu.Unlock()
	if n == 0 && going {
		d.closeNow()
	}
	if !held && waiting {
		d.startQueued() // its slot is free
	}
}

// shutdown sends GOAWAY and ends the connection once its streams are done.
func (d *h2down) shutdown() {
	d.mu.Lock()
	if d.goingAway {
		d.mu.Unlock()
		return
	}
	d.goingAway = true
	d.w.inbox.put(h2item{kind: h2GoAway, n: d.lastID, code: http2.ErrCodeNo})
	n := len(d.streams)
	d.mu.Unlock()
	if n == 0 {
		d.closeNow()
	}
}

func (d *h2down) idleTimeout() {
	d.mu.Lock()
	busy := len(d.streams) > 0
	d.mu.Unlock()
	if !busy {
		d.shutdown()
	}
}

// closeNow wakes the reader, which ends the connection after the writer
// has flushed (the GOAWAY).
func (d *h2down) closeNow() {
	d.mu.Lock()
	d.closing = true
	d.mu.Unlock()
	_ = d.nc.SetReadDeadline(time.Now())
}

// teardown ends the connection after its reader stopped with err.
func (d *h2down) teardown(err error) {
	d.idle.Stop()
	d.mu.Lock()
	closing := d.closing
	last := d.lastID
	d.goingAway = true
	streams := make([]*h2stream, 0, len(d.streams))
	for _, s := range d.streams {
		streams = append(streams, s)
	}
	// Reset below with the others: none is to start now.
	for _, s := range d.queue {
		s.queued = false
	}
	d.queue = nil
	d.waiting.Store(false)
	d.mu.Unlock()
	var ce h2ConnError
	if errors.As(err, &ce) {
		d.srv.cfg.Metrics.h2ConnError(d.srv.cfg.Direction, "src", ce.code)
		d.srv.log.Info("HTTP/2 connection error from client", zap.Stringer("code", ce.code), zap.Error(ce.err))
		d.w.inbox.put(h2item{kind: h2GoAway, n: last, code: ce.code})
	} else if err != nil && !closing && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		d.srv.log.Debug("HTTP/2 client connection ended", zap.Error(err))
	}
	d.batch.flush()
	d.w.inbox.close()
	d.w.dl.last(h2WriteTimeout)
	<-d.w.done
	if timedOut(d.w.err) {
		d.srv.cfg.Metrics.h2WriteTimeout(d.srv.cfg.Direction, "src")
		d.srv.logLimited(d.srv.h2FailedLog, "HTTP/2 client connection closed: it read nothing for the write timeout",
			"h2_write_timeout_src", authorityField(d.info.Labels.Authority), zap.Duration("timeout", d.srv.cfg.WriteTimeout))
	}
	d.lingerClose()
	for _, s := range append(streams, d.lost...) {
		s.clientReset()
	}
}

// h2conns are a Server's relayed client connections, for Shutdown.
type h2conns struct {
	mu     sync.Mutex
	m      map[*h2down]struct{}
	closed bool
	wg     sync.WaitGroup
}

func (t *h2conns) add(d *h2down) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.m == nil {
		t.m = map[*h2down]struct{}{}
	}
	t.m[d] = struct{}{}
	t.wg.Add(1)
	return true
}

func (t *h2conns) remove(d *h2down) {
	t.mu.Lock()
	delete(t.m, d)
	t.mu.Unlock()
	t.wg.Done()
}

// shutdown sends every connection GOAWAY and waits for them to end, or
// closes them when ctx is done.
func (t *h2conns) shutdown(ctx context.Context) {
	t.mu.Lock()
	t.closed = true
	conns := make([]*h2down, 0, len(t.m))
	for d := range t.m {
		conns = append(conns, d)
	}
	t.mu.Unlock()
	for _, d := range conns {
		d.shutdown()
	}
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		for _, d := range conns {
			_ = d.nc.Close()
		}
		<-done
	}
}

func (m *Metrics) h2ConnError(direction, peer string, code http2.ErrCode) {
	if m != nil {
		m.h2errors.WithLabelValues(direction, peer, code.String()).Inc()
	}
}

func (m *Metrics) h2WriteTimeout(direction, peer string) {
	if m != nil {
		m.h2timeouts.WithLabelValues(direction, peer).Inc()
	}
}
