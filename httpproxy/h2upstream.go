package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http2"
)

// ReasonHeaders answers a request whose headers exceed the relay's limit:
// 431.
const ReasonHeaders = "headers_too_large"

const (
	// h2SettingsTimeout bounds the wait for a new upstream connection's
	// SETTINGS, which tell how many streams it takes.
	h2SettingsTimeout = 10 * time.Second
	// h2MaxStreamID is the last client stream ID; a connection that
	// reaches it takes no new streams.
	h2MaxStreamID = 1<<31 - 1
)

// h2ResetPing is the payload of the PINGs that confirm resets.
var h2ResetPing = [8]byte{'m', 'e', 's', 'h', 'r', 's', 't'}

// H2Picker chooses, stream by stream, where a relayed HTTP/2 connection's
// requests go. An *H2Pool is the picker of a route with one upstream; a
// balanced route picks an endpoint per stream.
type H2Picker interface {
	// PickH2 returns the upstream of a new stream. skip holds the Keys of
	// the picks that failed to connect for this stream so far.
	PickH2(skip map[string]bool) (H2Pick, error)
}

// H2Pick is one stream's upstream and what to tell its chooser.
type H2Pick struct {
	Pool *H2Pool
	// Key names the pick in a later skip; "" means the stream is not
	// tried elsewhere when connecting fails.
	Key string
	// Observe, when set, is told how long the response headers took.
	Observe func(time.Duration)
	// Failed, when set, is told that connecting failed; it returns whether
	// to pick again (nothing of the request has been sent).
	Failed func(error) bool
	// Done, when set, is called once when the stream is over with this
	// pick, whichever way.
	Done func()
}

// H2Pool is the relay's pool of HTTP/2 connections to one upstream. Streams
// share a connection up to the limit its peer announces; the pool opens
// another when every connection is full, and closes connections idle for
// the idle timeout. Create one with NewH2Pool.
type H2Pool struct {
	cfg      TransportConfig
	bufs     *h2bufs
	lastUsed *atomic.Int64 // the owning Pool's, when it has one

	mu      sync.Mutex
	conns   []*h2up
	waiting []*h2stream
	dialing bool
	dials   dialScope
	dialBackoff

	// holdsExpired counts the reset streams released by h2ResetHold, not
	// by their upstream's confirmation.
	holdsExpired atomic.Int64
}

// NewH2Pool returns a pool dialing with cfg.Dial; cfg.Protocol is HTTP/2
// whatever it says.
func NewH2Pool(cfg TransportConfig) *H2Pool {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 90 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = h2FlushTimeout
	}
	return &H2Pool{cfg: cfg, bufs: newH2Bufs(), dialBackoff: newDialBackoff()}
}

// PickH2 makes a pool the picker of a route with one upstream.
func (p *H2Pool) PickH2(map[string]bool) (H2Pick, error) { return H2Pick{Pool: p}, nil }

// CloseIdle closes the connections without streams.
func (p *H2Pool) CloseIdle() {
	p.mu.Lock()
	conns := append([]*h2up(nil), p.conns...)
	p.dials.end() // under p.mu: a dial sees it ended, or its conn is in conns
	p.mu.Unlock()
	for _, c := range conns {
		c.closeIdle()
	}
}

// open queues s on a connection with room, dialing one if there is none.
func (p *H2Pool) open(s *h2stream) {
	if p.lastUsed != nil {
		p.lastUsed.Store(time.Now().UnixNano())
	}
	p.mu.Lock()
	for _, c := range p.conns {
		if c.reserve() {
			p.mu.Unlock()
			s.attach(c)
			return
		}
	}
	if err := p.blocked(time.Now()); err != nil && !p.dialing {
		p.mu.Unlock()
		s.connectFailed(err)
		return
	}
	p.waiting = append(p.waiting, s)
	dial := !p.dialing
	p.dialing = true
	var ctx context.Context
	if dial {
		ctx = p.dials.context()
	}
	p.mu.Unlock()
	if dial {
		go p.dial(ctx)
	}
}

// dial opens connections until every waiting stream has one, or ctx
// (CloseIdle) ends; a connect so ended says nothing of the upstream.
func (p *H2Pool) dial(ctx context.Context) {
	for {
		c, err := p.connect(ctx)
		p.mu.Lock()
		if err == nil && ctx.Err() != nil && len(p.waiting) == 0 {
			// Connected as CloseIdle ran, for nobody: not pooled.
			p.dialing = false
			p.mu.Unlock()
			c.closeIdle()
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				p.failed(err, time.Now())
			} else {
				err = context.Cause(ctx) // not the client's cancel
			}
			waiting := p.waiting
			p.waiting, p.dialing = nil, false
			p.mu.Unlock()
			for _, s := range waiting {
				s.connectFailed(err)
			}
			return
		}
		var give, rest []*h2stream
		for _, s := range p.waiting {
			if c.reserve() {
				give = append(give, s)
			} else {
				rest = append(rest, s)
			}
		}
		if len(give) == 0 && len(rest) > 0 {
			// It takes no stream (MAX_CONCURRENT_STREAMS 0): dialing on
			// would open connections in a loop. It is closed, and the
			// waiting streams fail.
			p.waiting, p.dialing = nil, false
			p.mu.Unlock()
			c.closeIdle()
			for _, s := range rest {
				s.connectFailed(errNoStreams)
			}
			return
		}
		p.connected()
		p.conns = append(p.conns, c)
		p.waiting = rest
		more := len(rest) > 0
		p.dialing = more
		p.mu.Unlock()
		for _, s := range give {
			s.attach(c)
		}
		if !more {
			return
		}
	}
}

// connect dials and starts a connection, once its peer's SETTINGS came.
func (p *H2Pool) connect(ctx context.Context) (*h2up, error) {
	nc, err := p.cfg.Dial(ctx)
	if err != nil {
		return nil, err
	}
	c := &h2up{pool: p, nextID: 1, streams: map[uint32]upEntry{}, peerID: PeerID(nc)}
	c.setup(nc, p.bufs, true, p.cfg.WriteTimeout)
	c.up = c
	c.w.inbox.put(h2item{kind: h2Own})
	go c.w.run()
	_ = nc.SetReadDeadline(time.Now().Add(h2SettingsTimeout))
	f, err := c.rf.ReadFrame()
	if err == nil {
		if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
			err = errors.New("http2: upstream's first frame is not SETTINGS")
		} else {
			err = c.settings(sf)
		}
	}
	if err != nil {
		c.w.inbox.close()
		<-c.w.done
		_ = nc.Close()
		return nil, err
	}
	_ = nc.SetReadDeadline(time.Time{})
	// Running from the start: a connection no stream reserves (reserve
	// stops it) is closed as idle too.
	c.idle = time.AfterFunc(p.cfg.IdleTimeout, c.closeIdle)
	go c.serve()
	return c, nil
}

func (p *H2Pool) remove(c *h2up) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.conns {
		if x == c {
			p.conns = append(p.conns[:i], p.conns[i+1:]...)
			return
		}
	}
}

// errNoStreams fails the streams waiting for a new connection that takes
// none.
var errNoStreams = errors.New("upstream connection allows no streams (MAX_CONCURRENT_STREAMS 0)")

// h2up is a pooled upstream connection on which the relay is the client.
type h2up struct {
	h2conn
	pool   *H2Pool
	peerID string

	mu         sync.Mutex
	streams    map[uint32]upEntry
	nextID     uint32
	active     int // streams reserved and not yet released
	maxStreams uint32
	// settingsSeen: the peer's first SETTINGS came.
	settingsSeen bool
	goaway       bool // takes no new streams
	closed       bool
	idle         *time.Timer

	// Resets of held streams written to the peer (see h2stream.hold),
	// confirmed by the ACK of a PING (see resetsConfirmed): rstPend have
	// no PING after them yet, rstPing wait for the one in flight
	// (pinging). pings bounds how often they are sent.
	rstPend, rstPing []*h2stream
	pinging          bool
	pings            h2PingBudget
	// pingCounted: pings.frameSeen would change the budget (a PING was
	// sent since the peer's last HEADERS or DATA); read by the reader
	// without mu.
	pingCounted atomic.Bool
}

// h2MaxPingStrikes is how many of the relay's PINGs in a row the peer may
// count against it. grpc-go's server (internal/transport, handlePing)
// counts a PING as a strike when it sent no HEADERS or DATA since the
// previous PING, within its keepalive MinTime (5 min by default), and
// ends the connection (GOAWAY ENHANCE_YOUR_CALM "too_many_pings") once
// strikes exceed 2; the first PING after its HEADERS or DATA resets them.
// One: the relay stays well under that whatever the peer's timing. The
// reset PINGs are the only PINGs the relay sends upstream (it has no
// keepalive; its ACKs are not counted).
const h2MaxPingStrikes = 1

// h2PingBudget is an upper bound of the strikes an upstream's ping policy
// counts against the relay (see h2MaxPingStrikes). Guarded by h2up.mu.
type h2PingBudget struct {
	// used: a PING went since the peer's last HEADERS or DATA read with
	// no PING in flight; until then the next PING may be a strike.
	used bool
	// strikes is at most what the peer counted at the last PING.
	strikes int
	// inFlight: HEADERS or DATA came while a PING was in flight; the
	// peer may have written them before or after it read the PING.
	inFlight bool
}

// allow reports whether a PING may go: a free one, or, when streams wait
// behind the held slots it confirms (urgent), one more strike.
func (b *h2PingBudget) allow(urgent bool) bool {
	return !b.used || (urgent && b.strikes < h2MaxPingStrikes)
}

// sent counts a PING written.
func (b *h2PingBudget) sent() {
	if b.used {
		b.strikes++
	} else {
		b.used, b.strikes = true, 0
	}
}

// acked is told that the PING in flight was acknowledged. If the peer
// wrote HEADERS or DATA meanwhile, either that PING found them (it reset
// the strikes; the next is one) or the next PING will (it is free): the
// next PING leaves at most one strike either way.
func (b *h2PingBudget) acked() {
	if b.inFlight {
		b.inFlight = false
		b.strikes = 0
	}
}

// frameSeen is told that the peer sent HEADERS or DATA: read after the
// ACK of the last PING, they were written after the peer read it, and the
// next PING is free.
func (b *h2PingBudget) frameSeen(pinging bool) {
	if pinging {
		b.inFlight = true
	} else {
		b.used = false
	}
}

type upEntry struct {
	s *h2stream
	o *h2out
}

// reserve takes a stream slot, false if the connection is full or going.
func (c *h2up) reserve() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goaway || c.closed || uint32(c.active) >= c.maxStreams || int64(c.nextID)+2*int64(c.active) > h2MaxStreamID {
		return false
	}
	c.active++
	if c.idle != nil {
		c.idle.Stop()
	}
	return true
}

// open gives s its stream ID as the writer writes its HEADERS; false if
// the connection may no longer open streams (GOAWAY) or s is over.
func (c *h2up) open(s *h2stream, o *h2out) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goaway || c.closed || s.closed.Load() || c.nextID > h2MaxStreamID {
		return false
	}
	o.id = c.nextID
	c.nextID += 2
	c.streams[o.id] = upEntry{s, o}
	s.upID = o.id
	return true
}

// release frees s's slot.
func (c *h2up) release(s *h2stream) {
	c.mu.Lock()
	if e, ok := c.streams[s.upID]; ok && e.s == s {
		delete(c.streams, s.upID)
	}
	c.active--
	idle, going := c.active == 0, c.goaway
	if idle && !going && !c.closed {
		c.idle.Reset(c.pool.cfg.IdleTimeout)
	}
	c.mu.Unlock()
	if idle && going {
		c.closeIdle()
	}
}

func (c *h2up) lookup(id uint32) (upEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.streams[id]
	return e, ok
}

// closeIdle ends the connection if it carries no stream.
func (c *h2up) closeIdle() {
	c.mu.Lock()
	if c.active > 0 || c.closed {
		c.mu.Unlock()
		return
	}
	c.goaway, c.closed = true, true
	c.mu.Unlock()
	c.pool.remove(c)
	c.w.inbox.put(h2item{kind: h2GoAway, code: http2.ErrCodeNo})
	_ = c.nc.SetReadDeadline(time.Now())
}

// settings applies what a connection's peer announces that the pool
// needs, and passes the frame to the writer.
func (c *h2up) settings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.mu.Lock()
	if v, ok := f.Value(http2.SettingMaxConcurrentStreams); ok {
		c.maxStreams = v // 0: no streams on this connection, for now
	} else if !c.settingsSeen {
		// The peer sets no limit: ours. A later SETTINGS without the
		// field leaves the limit as it was (RFC 9113, 6.5.3).
		c.maxStreams = 1000
	}
	c.settingsSeen = true
	c.mu.Unlock()
	return settingsFrame(&c.h2conn, f)
}

func (c *h2up) serve() {
	err := c.read()
	c.mu.Lock()
	c.goaway, c.closed = true, true
	entries := make([]upEntry, 0, len(c.streams))
	for _, e := range c.streams {
		entries = append(entries, e)
	}
	c.mu.Unlock()
	c.pool.remove(c)
	var ce h2ConnError
	if errors.As(err, &ce) {
		c.w.inbox.put(h2item{kind: h2GoAway, code: ce.code})
	}
	c.w.inbox.close()
	c.w.dl.last(h2WriteTimeout)
	<-c.w.done
	c.lingerClose()
	c.idle.Stop()
	if timedOut(c.w.err) {
		// The upstream took nothing for the write timeout: its streams
		// fail as timed out, not as a connection lost.
		err = fmt.Errorf("upstream not reading: %w", c.w.err)
		c.countWriteTimeout(entries, c.lost)
	} else if err == nil || errors.Is(err, net.ErrClosed) {
		err = errUpstreamGone
	}
	for _, e := range entries {
		e.s.upstreamLost(c, err)
	}
	for _, s := range c.lost {
		s.upstreamLost(c, err)
	}
	// The peer cannot confirm resets any more, nor needs to.
	c.mu.Lock()
	held := append(c.rstPend, c.rstPing...)
	c.rstPend, c.rstPing = nil, nil
	c.mu.Unlock()
	for _, s := range held {
		s.unhold()
	}
}

// countWriteTimeout counts and logs an upstream connection closed because
// it read nothing for the write timeout. The pool has no metrics: the
// server of a stream it carried counts it; without one (a connection
// idle but for PINGs and SETTINGS) it is not counted.
func (c *h2up) countWriteTimeout(entries []upEntry, lost []*h2stream) {
	var s *h2stream
	if len(entries) > 0 {
		s = entries[0].s
	} else if len(lost) > 0 {
		s = lost[0]
	} else {
		return
	}
	srv := s.srv()
	srv.cfg.Metrics.h2WriteTimeout(srv.cfg.Direction, "dst")
	srv.logLimited(srv.h2FailedLog, "HTTP/2 upstream connection closed: it read nothing for the write timeout",
		"h2_write_timeout_dst", zap.String("server_id", c.peerID), zap.Duration("timeout", c.pool.cfg.WriteTimeout))
}

// resetWritten records that the writer wrote the reset of s, a held
// stream.
func (c *h2up) resetWritten(s *h2stream) {
	c.mu.Lock()
	if len(c.rstPend) == cap(c.rstPend) && len(c.rstPend) >= 64 {
		// Streams released by their timeout meanwhile need no PING: with
		// PINGs blocked for long the list would only grow.
		c.rstPend = slices.DeleteFunc(c.rstPend, (*h2stream).unheld)
	}
	c.rstPend = append(c.rstPend, s)
	c.mu.Unlock()
}

// pingResets writes, in w (the connection's writer), the PING that
// confirms the resets written so far, unless one is in flight or the ping
// budget says no.
func (c *h2up) pingResets(w *h2writer) {
	c.mu.Lock()
	send := !c.pinging && len(c.rstPend) > 0 && c.pings.allow(c.urgentLocked())
	if send {
		c.pinging = true
		c.pings.sent()
		c.pingCounted.Store(true)
		c.rstPing, c.rstPend = c.rstPend, c.rstPing[:0]
	}
	c.mu.Unlock()
	if send {
		w.dirty = true
		w.check(w.fr.WritePing(false, h2ResetPing))
	}
}

// urgentLocked reports whether streams of a client whose resets wait for a
// PING wait in that client's queue, behind held slots.
func (c *h2up) urgentLocked() bool {
	if !c.pings.used {
		return false // not needed: the next PING is free
	}
	for _, s := range c.rstPend {
		if s.down.waiting.Load() {
			return true
		}
	}
	return false
}

// resetsConfirmed releases the streams whose resets the peer has read:
// it acknowledged the PING written after them. Those written since go
// too, as net/http's transport has it: they were on their way, and with
// PINGs blocked they would wait for the peer's next HEADERS or DATA.
func (c *h2up) resetsConfirmed() {
	c.mu.Lock()
	if !c.pinging {
		c.mu.Unlock()
		return
	}
	c.pinging = false
	c.pings.acked()
	done := append(c.rstPing, c.rstPend...)
	c.rstPing, c.rstPend = nil, nil
	c.mu.Unlock()
	for _, s := range done {
		s.unhold()
	}
}

// peerSent is told, by the reader, that the peer sent HEADERS or DATA
// after a PING: resets waiting for a PING may get one.
func (c *h2up) peerSent() {
	c.mu.Lock()
	c.pings.frameSeen(c.pinging)
	if !c.pings.used {
		c.pingCounted.Store(false)
	}
	c.mu.Unlock()
	c.wakePing()
}

// wakePing has the writer send a PING for the resets waiting for one, if
// the budget allows: after the peer's HEADERS or DATA, or when streams
// start waiting behind held slots.
func (c *h2up) wakePing() {
	c.mu.Lock()
	due := len(c.rstPend) > 0 && !c.pinging
	c.mu.Unlock()
	if due {
		c.w.inbox.put(h2item{kind: h2PingResets})
	}
}

func (c *h2up) read() error {
	defer c.batch.flush()
	var se http2.StreamError // once: see h2down.read
	for {
		f, err := c.readFrame()
		if errors.As(err, &se) {
			if e, ok := c.lookup(se.StreamID); ok {
				e.s.resetBoth(se.Code)
			}
			continue
		}
		if err != nil {
			return frameError(err)
		}
		if err := c.frame(f); err != nil {
			return err
		}
	}
}

func (c *h2up) frame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		if c.pingCounted.Load() {
			c.peerSent()
		}
		if e, ok := c.lookup(f.StreamID); ok {
			if f.StreamEnded() {
				e.s.upstreamDone()
			}
			e.s.responseHeaders(c, f)
		}
	case *http2.DataFrame:
		if !c.received(f.Length) {
			return h2ConnError{http2.ErrCodeFlowControl, errors.New("connection window overrun")}
		}
		if c.pingCounted.Load() {
			c.peerSent()
		}
		e, ok := c.lookup(f.StreamID)
		if !ok {
			return nil
		}
		if f.StreamEnded() {
			e.s.upstreamDone()
		}
		if e.s.respRecv.Add(-int32(f.Length)) < 0 {
			e.s.resetBoth(http2.ErrCodeFlowControl)
			return nil
		}
		data := f.Data()
		if pad := f.Length - uint32(len(data)); pad > 0 && !c.creditPadding(e.s, e.o, &e.s.respPad, pad) {
			return errTooManyControl
		}
		if len(data) > 0 || f.StreamEnded() {
			it := c.copyData(e.s, data, f.StreamEnded())
			if e.s.overHeld("dst") {
				it.release(c.bufs)
				e.s.resetBoth(http2.ErrCodeEnhanceYourCalm)
				return nil
			}
			e.s.responseData(c, it)
		}
	case *http2.RSTStreamFrame:
		if e, ok := c.lookup(f.StreamID); ok {
			e.s.upstreamDone()
			e.s.upstreamReset(c, f.ErrCode)
		}
	case *http2.SettingsFrame:
		return c.settings(f)
	case *http2.PingFrame:
		if f.IsAck() {
			if f.Data == h2ResetPing {
				c.resetsConfirmed()
			}
		} else if !c.w.inbox.putControl(h2item{kind: h2Ping, ping: f.Data}) {
			return errTooManyControl
		}
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			c.w.inbox.putControl(h2item{kind: h2PeerWindow, n: f.Increment})
		} else if e, ok := c.lookup(f.StreamID); ok {
			c.w.inbox.putControl(h2item{kind: h2PeerWindow, s: e.s, o: e.o, n: f.Increment})
		}
	case *http2.GoAwayFrame:
		c.goAway(f.LastStreamID)
	case *http2.PushPromiseFrame:
		return h2ConnError{http2.ErrCodeProtocol, errors.New("PUSH_PROMISE though push is off")}
	}
	return nil
}

// goAway stops new streams on the connection; those above last were not
// processed by the peer and go elsewhere (see h2stream.refused).
func (c *h2up) goAway(last uint32) {
	c.mu.Lock()
	c.goaway = true
	var refused []upEntry
	for id, e := range c.streams {
		if id > last {
			refused = append(refused, e)
		}
	}
	idle := c.active == 0
	c.mu.Unlock()
	c.pool.remove(c)
	for _, e := range refused {
		e.s.refused(c)
	}
	if idle {
		c.closeIdle()
	}
}
