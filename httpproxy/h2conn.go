package httpproxy

import (
	"bytes"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// What the relay advertises to each peer, and how it buffers.
const (
	// h2StreamWindow is the flow-control window of each stream a client
	// sends on: the most a stream's request body may have in the relay at
	// once. It is given back only as the relay writes the bytes upstream.
	// A response stream's window grows to it too, within h2RespBudget.
	h2StreamWindow = 1 << 20
	// h2ConnWindow is a client connection's window, given back only as
	// the relay writes the bytes upstream (or drops them): the most of a
	// client's request bodies the relay holds, whatever its streams. A
	// stream whose upstream is slow holds its share of it, as net/http's
	// server does with a handler that does not read.
	h2ConnWindow = 4 << 20
	// h2UpStreamWindow is the window a response stream starts with: what
	// its upstream may send before the client reads any of it. The
	// protocol's default; small answers never need more.
	h2UpStreamWindow = 64 << 10
	// h2RespBudget is what a client connection's busy response streams may
	// hold beyond h2UpStreamWindow each: a stream whose client reads grows
	// its window by h2RespGrowth times what it read, up to h2StreamWindow,
	// while the budget lasts. The growth goes back when the stream ends, or, once the
	// stream is idle (h2RespIdleAfter), moves to h2RespIdleBudget and goes
	// back as the window shrinks: the relay stops renewing it as the
	// upstream uses it (a window given cannot be taken back). A client
	// connection thus holds at most h2MaxStreams × h2UpStreamWindow +
	// h2RespBudget + h2RespIdleBudget of responses (24 MiB).
	h2RespBudget = 4 << 20
	// h2RespIdleBudget is what idle response streams may still hold beyond
	// h2UpStreamWindow each once their growth left h2RespBudget: windows
	// their upstreams may still fill, so that a few long-lived streams
	// which once carried a large message do not keep every later stream
	// at h2UpStreamWindow. Past it, an idle stream's growth stays in
	// h2RespBudget until it shrinks.
	h2RespIdleBudget = 4 << 20
	// h2RespIdleAfter is how long a response stream whose window grew
	// must go without DATA to count as idle.
	h2RespIdleAfter = time.Second
	// h2UpConnWindow is an upstream connection's window. It is given back
	// as frames arrive: the streams' windows bound what each client holds,
	// and a client that does not read must not stall the upstream
	// connection it shares with others.
	h2UpConnWindow = 16 << 20
	// h2MaxStreams is the concurrent streams a client may open: net/http's
	// default, which clients had before the relay. Streams reset upstream
	// still count until the upstream has seen the reset (h2stream.hold).
	h2MaxStreams = 250
	// h2MaxHeaderList bounds a decoded header block (net/http's default).
	h2MaxHeaderList = 1 << 20
	// h2MaxControl bounds the control items (PING and SETTINGS answers,
	// resets, window updates) queued for a peer that does not read them.
	h2MaxControl = 4096
	// h2MaxSettings bounds the entries of one SETTINGS frame, as net/http
	// does: there are 6 settings; more entries only cost memory.
	h2MaxSettings = 100
	// h2WriteTimeout bounds the last flush of a connection being closed.
	h2WriteTimeout = 5 * time.Second
	// h2FlushTimeout is the default bound on each write to a peer
	// (Config.WriteTimeout, TransportConfig.WriteTimeout). HTTP/2 peers
	// read eagerly, flow control being their backpressure: one that takes
	// no bytes for this long is stuck, and its connection is closed
	// rather than hold the relay's writer and buffers.
	h2FlushTimeout = 10 * time.Second
	// h2Linger and h2LingerBytes bound what lingerClose reads after the
	// last flush: long enough for a GOAWAY to reach the peer, short
	// enough that a peer flooding a closing connection pins little.
	h2Linger      = time.Second
	h2LingerBytes = 1 << 20
	h2FrameSize   = 16 << 10 // the protocol's default max frame size
	// h2BigFrame is the DATA frame size the relay takes, and announces.
	// Between two relays it means a quarter of the frames, and of their
	// TLS records, for a bulk stream; a writer joins the frames queued for
	// a stream into frames of its peer's max size.
	h2BigFrame    = 64 << 10
	h2ReadBuffer  = 64 << 10
	h2WriteBuffer = 128 << 10
	// h2ItemCost is what one queued DATA item costs besides its buffer,
	// roughly: counted so that many tiny frames cost what they pin.
	h2ItemCost = 256
	// h2MaxHeld bounds the bytes (buffers and items) one stream may pin
	// in the relay. Its window bounds the payload to h2StreamWindow; a
	// peer whose frames do not fill the buffers they land in (each
	// payload takes a 16 or 64 KiB one unless it joins the one before)
	// may cost up to 4 times that before it is reset.
	h2MaxHeld = 4*h2StreamWindow + h2BigFrame
)

// h2bufs lend the buffers DATA payloads cross the relay in, in two sizes.
// A buffer goes back to the pool of the connection that wrote it. Busy
// connections borrow their read buffers from big too (h2ReadBuffer is
// h2BigFrame), and their write buffers from write.
type h2bufs struct{ small, big, write sync.Pool }

func newH2Bufs() *h2bufs {
	b := &h2bufs{}
	b.small.New = func() any { p := make([]byte, h2FrameSize); return &p }
	b.big.New = func() any { p := make([]byte, h2BigFrame); return &p }
	b.write.New = func() any { p := make([]byte, h2WriteBuffer); return &p }
	return b
}

func (b *h2bufs) get(n int) *[]byte {
	if n <= h2FrameSize {
		return b.small.Get().(*[]byte)
	}
	return b.big.Get().(*[]byte)
}

func (b *h2bufs) put(p *[]byte) {
	if cap(*p) >= h2BigFrame {
		b.big.Put(p)
	} else {
		b.small.Put(p)
	}
}

type h2kind uint8

const (
	h2Headers    h2kind = iota // fields, end: a stream's headers or trailers
	h2Data                     // data, end
	h2Reset                    // code: RST_STREAM; NO_ERROR after what is queued, others at once
	h2Credit                   // n: our WINDOW_UPDATE to the peer (s nil: connection)
	h2PeerWindow               // n: the peer's WINDOW_UPDATE to us (s nil: connection)
	h2Settings                 // settings: the peer's, to apply and ACK
	h2Ping                     // ping: to answer
	h2GoAway                   // n: last stream ID, code
	h2Own                      // the relay's own SETTINGS and connection window
	h2PingResets               // upstream: a PING may confirm the resets written
)

// h2item is one thing for a connection's writer to do.
type h2item struct {
	kind     h2kind
	end      bool
	quiet    bool // h2Reset: the peer reset the stream; forget it, write nothing
	hold     bool // h2Reset upstream: s is held until the upstream saw it (h2stream.hold)
	ctl      bool // queued by putControl
	code     http2.ErrCode
	n        uint32
	s        *h2stream
	o        *h2out // the direction of s the item is for
	fields   []hpack.HeaderField
	data     []byte
	buf      *[]byte       // data's pooled buffer, returned once written
	held     *atomic.Int64 // the stream's count of bytes held, for h2MaxHeld
	cost     int64         // what this item adds to held
	from     *h2conn       // the connection whose window data took
	fc       uint32        // that window, given back to from on release
	ping     [8]byte
	settings []http2.Setting
}

func (it *h2item) release(bufs *h2bufs) {
	if it.buf != nil {
		bufs.put(it.buf)
		it.buf = nil
	}
	if it.held != nil {
		it.held.Add(-it.cost)
		it.held = nil
	}
	if it.fc > 0 {
		// Written on or dropped: either way it has left the relay.
		it.from.giveBack(it.fc)
		it.fc = 0
	}
}

// absorb appends next, a DATA item queued right after it for the same
// stream, to it's buffer if there is room, and releases next: a run of
// tiny frames then shares one buffer instead of pinning one each.
func (it *h2item) absorb(next *h2item, bufs *h2bufs) bool {
	if it.kind != h2Data || next.kind != h2Data || it.end || it.buf == nil ||
		it.s != next.s || it.o != next.o || len(next.data) > cap(it.data)-len(it.data) {
		return false
	}
	it.data = append(it.data, next.data...)
	it.end = next.end
	it.fc += next.fc // its bytes are it's now
	next.fc = 0
	next.release(bufs)
	return true
}

// h2inbox is a writer's queue: readers of either connection append to it
// and wake the writer, which takes everything queued at once.
type h2inbox struct {
	bufs    *h2bufs
	mu      sync.Mutex
	items   []h2item
	closed  bool
	control int // control items queued, for h2MaxControl
	wake    chan struct{}
}

// put queues items, false if the writer is gone (they are released).
func (b *h2inbox) put(items ...h2item) bool {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		for i := range items {
			items[i].release(b.bufs)
		}
		return false
	}
	wasEmpty := len(b.items) == 0
	for i := range items {
		if items[i].ctl {
			b.control++
		}
		if n := len(b.items); n > 0 && b.items[n-1].absorb(&items[i], b.bufs) {
			continue
		}
		b.items = append(b.items, items[i])
	}
	b.mu.Unlock()
	if wasEmpty {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// putControl queues a control item: something a peer's frame makes the
// relay queue for that peer (an answer, a reset, a window). False once too
// many are waiting: the peer sends faster than it reads, and its
// connection must end, or the queue grows without bound.
func (b *h2inbox) putControl(it h2item) bool {
	it.ctl = true
	b.put(it)
	return !b.overControl()
}

// overControl reports whether more than h2MaxControl control items wait.
func (b *h2inbox) overControl() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.control > h2MaxControl
}

// errTooManyControl ends a connection whose peer does not read what its
// own frames make the relay answer.
var errTooManyControl = h2ConnError{http2.ErrCodeEnhanceYourCalm, errors.New("too many unanswered frames")}

// take swaps the queue for dst (emptied) and returns it with whether the
// inbox is closed.
func (b *h2inbox) take(dst []h2item) ([]h2item, bool) {
	b.mu.Lock()
	items := b.items
	b.items = dst[:0]
	closed := b.closed
	b.mu.Unlock()
	return items, closed
}

func (b *h2inbox) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// h2batch holds what a reader passes on to writers until it is about to
// wait for the network: the frames of one read reach each writer at once,
// and the writer flushes them in one write.
type h2batch struct {
	to    []*h2inbox
	items [][]h2item
	n     int
}

// h2MaxBatch bounds what a reader holds before passing it on.
const h2MaxBatch = 128

func (b *h2batch) add(in *h2inbox, it h2item) {
	for i, t := range b.to {
		if t == in {
			if n := len(b.items[i]); n > 0 && b.items[i][n-1].absorb(&it, in.bufs) {
				return
			}
			b.items[i] = append(b.items[i], it)
			b.n++
			return
		}
	}
	b.to = append(b.to, in)
	if len(b.items) < len(b.to) {
		b.items = append(b.items, nil)
	}
	i := len(b.to) - 1
	b.items[i] = append(b.items[i][:0], it)
	b.n++
}

func (b *h2batch) flush() {
	for i, in := range b.to {
		in.put(b.items[i]...)
		clear(b.items[i])
		b.items[i] = b.items[i][:0]
	}
	clear(b.to)
	b.to = b.to[:0]
	b.n = 0
}

// h2out is one direction of a stream as its writer sees it: what is queued
// for it and the window its peer gave. Only that writer touches it.
type h2out struct {
	id     uint32
	window int32
	q      []h2item
	qh     int // q[qh:] is pending
	init   bool
	ready  bool // in the writer's ready list
	ended  bool // END_STREAM written
	reset  bool // RST_STREAM written or received: nothing more
	// credit is what was written of o and not yet given back to its
	// sender; recvWin the window that sender has, whose quarter is the
	// batch credits go back in.
	credit  uint32
	recvWin uint32
}

// h2writer writes one connection: everything queued in its inbox, encoded
// into a buffer that is flushed only when the inbox is empty, so frames of
// many streams leave in one write.
type h2writer struct {
	c     *h2conn
	inbox h2inbox
	dl    h2deadline
	bw    *h2bufWriter
	fr    *http2.Framer
	enc   *hpack.Encoder
	// dataHdr is the DATA frame header writeData writes.
	dataHdr [9]byte
	hbuf    bytes.Buffer
	err     error
	dirty   bool
	done    chan struct{}
	// pingDue: resets of held streams were written (upstream only).
	pingDue bool

	maxFrame   uint32
	maxHeaders uint32 // the peer's SETTINGS_MAX_HEADER_LIST_SIZE
	initWindow int32
	connWindow int64
	outs       map[*h2out]*h2stream
	ready      []h2ready
	spare      []h2ready
}

type h2ready struct {
	s *h2stream
	o *h2out
}

func (w *h2writer) setup(c *h2conn, timeout time.Duration) {
	w.c = c
	w.inbox.wake = make(chan struct{}, 1)
	w.inbox.bufs = c.bufs
	w.dl = h2deadline{nc: c.nc, timeout: timeout}
	w.bw = &h2bufWriter{w: &w.dl, pool: &c.bufs.write}
	w.fr = http2.NewFramer(w.bw, nil)
	w.enc = hpack.NewEncoder(&w.hbuf)
	w.done = make(chan struct{})
	w.maxFrame = h2FrameSize
	w.maxHeaders = math.MaxUint32 // unlimited until announced
	w.initWindow = 65535
	w.connWindow = 65535
	w.outs = map[*h2out]*h2stream{}
}

// touch readies o, s's direction this writer sends, on first use: its
// window starts at the peer's current initial window.
func (w *h2writer) touch(s *h2stream, o *h2out) *h2out {
	if !o.init {
		o.init = true
		o.window = w.initWindow
		if w.c.upstream {
			o.recvWin = h2StreamWindow
		} else {
			o.id = s.downID
			o.recvWin = h2UpStreamWindow
		}
		w.outs[o] = s
	}
	return o
}

func (w *h2writer) run() {
	defer close(w.done)
	var items []h2item
	for {
		var closed bool
		items, closed = w.inbox.take(items)
		if len(items) == 0 {
			if w.dirty && w.err == nil {
				w.dirty = false
				if err := w.bw.Flush(); err != nil {
					w.fail(err)
				}
			}
			if closed {
				w.drop()
				return
			}
			<-w.inbox.wake
			continue
		}
		control := 0
		for i := range items {
			if items[i].ctl {
				control++
			}
			w.apply(&items[i])
			items[i] = h2item{}
		}
		if control > 0 {
			w.inbox.mu.Lock()
			w.inbox.control -= control
			w.inbox.mu.Unlock()
		}
		w.writeReady()
		if w.pingDue {
			w.pingDue = false
			w.c.up.pingResets(w)
		}
	}
}

// fail stops writing after an error and closes the connection, so its
// reader ends and tears the streams down.
func (w *h2writer) fail(err error) {
	if w.err == nil {
		w.err = err
		_ = w.c.nc.Close()
	}
}

// drop releases what is still queued when the writer stops; streams whose
// frames it held are lost with the connection.
func (w *h2writer) drop() {
	for o, s := range w.outs {
		for i := o.qh; i < len(o.q); i++ {
			o.q[i].release(w.c.bufs)
		}
		o.q, o.qh = nil, 0
		if !o.reset && !(o.ended && w.c.upstream) {
			w.c.lost = append(w.c.lost, s)
		}
	}
}

func (w *h2writer) apply(it *h2item) {
	if w.err != nil && it.kind != h2Headers && it.kind != h2Data && it.kind != h2Reset {
		return
	}
	switch it.kind {
	case h2Headers, h2Data:
		o := w.touch(it.s, it.o)
		if o.reset || o.ended {
			it.release(w.c.bufs)
			return
		}
		if n := len(o.q); n > o.qh && o.q[n-1].absorb(it, w.c.bufs) {
			w.schedule(it.s, o)
			return
		}
		if o.q == nil {
			// Room for a call's headers, message and trailers: grown
			// from nothing, a queue allocated up to three times.
			o.q = make([]h2item, 0, 4)
		}
		o.q = append(o.q, *it)
		w.schedule(it.s, o)
	case h2Reset:
		o := w.touch(it.s, it.o)
		if o.reset {
			if it.hold {
				it.s.unhold() // the upstream's stream is closed already
			}
			return
		}
		if it.code == http2.ErrCodeNo && !it.quiet && !it.hold {
			// After the answer: the client is told to stop sending.
			o.q = append(o.q, *it)
			w.schedule(it.s, o)
			return
		}
		written := w.resetOut(o, it.code, it.quiet)
		w.resetDone(it.s)
		if it.hold {
			w.heldReset(it.s, written)
		}
	case h2PingResets:
		w.pingDue = true
	case h2Credit:
		w.credit(it)
	case h2PeerWindow:
		w.peerWindow(it)
	case h2Settings:
		w.settings(it.settings)
	case h2Ping:
		w.dirty = true
		w.check(w.fr.WritePing(true, it.ping))
	case h2GoAway:
		w.dirty = true
		w.check(w.fr.WriteGoAway(it.n, it.code, nil))
	case h2Own:
		w.dirty = true
		if w.c.upstream {
			_, err := w.bw.WriteString(http2.ClientPreface)
			w.check(err)
		}
		w.check(w.fr.WriteSettings(w.c.ownSettings()...))
		w.check(w.fr.WriteWindowUpdate(0, uint32(w.c.connWin-65535)))
	}
}

func (w *h2writer) check(err error) {
	if err != nil {
		w.fail(err)
	}
}

// credit sends a WINDOW_UPDATE: the relay has passed on what the peer sent.
func (w *h2writer) credit(it *h2item) {
	if it.s == nil {
		w.dirty = true
		w.check(w.fr.WriteWindowUpdate(0, it.n))
		return
	}
	o := w.touch(it.s, it.o)
	if o.id == 0 || o.reset {
		return
	}
	recv := &it.s.reqRecv
	if w.c.upstream {
		recv = &it.s.respRecv
	}
	recv.Add(int32(it.n))
	w.dirty = true
	w.check(w.fr.WriteWindowUpdate(o.id, it.n))
}

func (w *h2writer) peerWindow(it *h2item) {
	if it.s == nil {
		w.connWindow += int64(it.n)
		if w.connWindow > 1<<31-1 {
			w.c.connError(http2.ErrCodeFlowControl, errors.New("peer overflowed the connection window"))
		}
		return
	}
	o := w.touch(it.s, it.o)
	if int64(o.window)+int64(it.n) > 1<<31-1 {
		if !w.c.upstream {
			// The client's doing: charged as its other stream errors.
			if err := it.s.down.chargeEnd(it.s); err != nil {
				w.c.connError(errRapidReset.code, errRapidReset.err)
				return
			}
		}
		it.s.resetBoth(http2.ErrCodeFlowControl)
		return
	}
	o.window += int32(it.n)
	w.schedule(it.s, o)
}

func (w *h2writer) settings(ss []http2.Setting) {
	for _, st := range ss {
		switch st.ID {
		case http2.SettingInitialWindowSize:
			delta := int32(st.Val) - w.initWindow
			if !w.windowsFit(delta) {
				w.c.connError(http2.ErrCodeFlowControl, errors.New("SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window"))
				return
			}
			w.initWindow = int32(st.Val)
			for o, s := range w.outs {
				o.window += delta
				w.schedule(s, o)
			}
		case http2.SettingMaxFrameSize:
			w.maxFrame = st.Val
		case http2.SettingMaxHeaderListSize:
			w.maxHeaders = st.Val
		case http2.SettingHeaderTableSize:
			w.enc.SetMaxDynamicTableSizeLimit(st.Val)
		}
	}
	w.dirty = true
	w.check(w.fr.WriteSettingsAck())
}

// windowsFit reports whether every open stream's window stays within
// 2^31-1 when the initial window changes by delta (RFC 9113, 6.9.2).
func (w *h2writer) windowsFit(delta int32) bool {
	for o := range w.outs {
		if int64(o.window)+int64(delta) > 1<<31-1 {
			return false
		}
	}
	return true
}

// headerListSize is a header block's size as SETTINGS_MAX_HEADER_LIST_SIZE
// counts it (RFC 9113, 6.5.2).
func headerListSize(fields []hpack.HeaderField) uint64 {
	var n uint64
	for _, f := range fields {
		n += uint64(len(f.Name) + len(f.Value) + 32)
	}
	return n
}

// headersTooLarge drops a header block over the peer's announced limit,
// which the peer would refuse: a request gets the relay's 431, a response
// is reset (or gets a 502 if nothing of it was written yet: see fail).
func (w *h2writer) headersTooLarge(s *h2stream, o *h2out) {
	if w.c.upstream {
		w.resetOut(o, http2.ErrCodeCancel, o.id == 0)
		s.fail(failure{http.StatusRequestHeaderFieldsTooLarge, grpcUnavailable, ReasonHeaders}, errHeadersTooLarge)
		return
	}
	w.resetOut(o, http2.ErrCodeInternal, false)
	w.resetDone(s)
	s.fail(failure{http.StatusBadGateway, grpcUnavailable, ReasonBadGateway}, errHeadersTooLarge)
}

func (w *h2writer) schedule(s *h2stream, o *h2out) {
	if !o.ready && o.qh < len(o.q) {
		o.ready = true
		w.ready = append(w.ready, h2ready{s, o})
	}
}

// writeReady writes what the windows allow of every stream with something
// queued.
func (w *h2writer) writeReady() {
	if w.err != nil {
		for _, r := range w.ready {
			r.o.ready = false
		}
		w.ready = w.ready[:0]
		return
	}
	ready := w.ready
	w.ready = w.spare[:0]
	for _, r := range ready {
		r.o.ready = false
		w.writeOut(r.s, r.o)
		if r.o.qh < len(r.o.q) && r.o.window > 0 && !r.o.reset {
			// Blocked on the connection window: it stays ready.
			w.schedule(r.s, r.o)
		}
	}
	clear(ready)
	w.spare = ready[:0]
}

// writeOut writes o's queue until it is empty or out of window.
func (w *h2writer) writeOut(s *h2stream, o *h2out) {
	for o.qh < len(o.q) && w.err == nil && !o.reset {
		it := &o.q[o.qh]
		switch it.kind {
		case h2Reset:
			w.resetOut(o, it.code, false)
			w.resetDone(s)
			return
		case h2Headers:
			if headerListSize(it.fields) > uint64(w.maxHeaders) {
				w.headersTooLarge(s, o)
				return
			}
			if o.id == 0 && !w.c.up.open(s, o) {
				w.resetOut(o, 0, true)
				s.refused(w.c.up)
				return
			}
			w.writeHeaders(o.id, it.fields, it.end)
		default:
			if !w.writeData(s, o) {
				return
			}
			continue
		}
		end := it.end
		o.q[o.qh] = h2item{}
		o.qh++
		if o.qh == len(o.q) {
			o.q, o.qh = o.q[:0], 0
		}
		if end {
			o.ended = true
			delete(w.outs, o)
			s.ended(w.c)
		}
	}
}

// writeData writes one DATA frame of what is queued at the head of o,
// joining queued payloads up to the peer's frame size and the windows;
// false if there is no window.
func (w *h2writer) writeData(s *h2stream, o *h2out) bool {
	// A window made negative by SETTINGS still lets an empty END_STREAM
	// through: it costs no window.
	limit := max(0, min(int64(o.window), w.connWindow, int64(w.maxFrame)))
	var n int64
	end := false
	// The items this frame takes whole, then at most part of one. The
	// write loop below consumes exactly the same ones, so that an END_STREAM
	// is written once, with the frame that took its item.
	for j := o.qh; j < len(o.q) && o.q[j].kind == h2Data; j++ {
		size := int64(len(o.q[j].data))
		if size > limit-n {
			n = limit
			break
		}
		n += size
		if o.q[j].end {
			end = true
			break
		}
	}
	if n == 0 && !end {
		return false
	}
	var flags http2.Flags
	if end {
		flags = http2.FlagDataEndStream
	}
	// In w, not on the stack: Write passes it to an io.Writer, which would
	// move a local to the heap, an allocation per frame.
	w.dataHdr = [9]byte{byte(n >> 16), byte(n >> 8), byte(n), byte(http2.FrameData), byte(flags),
		byte(o.id >> 24), byte(o.id >> 16), byte(o.id >> 8), byte(o.id)}
	w.dirty = true
	_, err := w.bw.Write(w.dataHdr[:])
	w.check(err)
	for rem := n; o.qh < len(o.q) && o.q[o.qh].kind == h2Data; {
		it := &o.q[o.qh]
		k := min(int64(len(it.data)), rem)
		if k > 0 {
			_, err := w.bw.Write(it.data[:k])
			w.check(err)
			it.data = it.data[k:]
			rem -= k
		}
		if len(it.data) > 0 {
			break
		}
		// Empty items after the last byte belong to this frame too: an
		// empty END_STREAM left queued would go out again as a second
		// END_STREAM, which the peer answers with STREAM_CLOSED.
		itEnd := it.end
		it.release(w.c.bufs)
		o.q[o.qh] = h2item{}
		o.qh++
		if itEnd {
			break
		}
	}
	if o.qh == len(o.q) {
		o.q, o.qh = o.q[:0], 0
	}
	o.window -= int32(n)
	w.connWindow -= n
	w.passOn(s, o, uint32(n))
	if end {
		o.ended = true
		delete(w.outs, o)
		s.ended(w.c)
	}
	return true
}

// passOn gives back, in batches, the window of the stream's sender on the
// other hop: what it sent has left the relay. A response stream's window
// may grow or shrink with it (h2RespBudget).
func (w *h2writer) passOn(s *h2stream, o *h2out, n uint32) {
	o.credit += n
	if o.credit < o.recvWin/4 {
		return
	}
	if other, oo, give, win := s.creditTo(w.c, o.credit); other != nil {
		if give > 0 {
			other.inbox.put(h2item{kind: h2Credit, s: s, o: oo, n: give})
		}
		o.recvWin = win
	}
	o.credit = 0
}

// resetOut drops what is queued for o and, unless quiet, writes
// RST_STREAM with code; it reports whether it did.
func (w *h2writer) resetOut(o *h2out, code http2.ErrCode, quiet bool) bool {
	o.reset = true
	for i := o.qh; i < len(o.q); i++ {
		o.q[i].release(w.c.bufs)
	}
	// Nil, not emptied: the items left in its array would keep their
	// fields and stream while a held stream waits (h2stream.hold).
	o.q, o.qh = nil, 0
	delete(w.outs, o)
	if o.id == 0 || quiet || w.err != nil {
		return false
	}
	w.dirty = true
	w.check(w.fr.WriteRSTStream(o.id, code))
	return w.err == nil
}

// heldReset follows the reset of a held stream upstream: one the upstream
// never had, or that did not go out, is released; one written waits for
// the PING that confirms it (see h2up.pingResets).
func (w *h2writer) heldReset(s *h2stream, written bool) {
	if !written {
		s.unhold()
		return
	}
	w.c.up.resetWritten(s)
	w.pingDue = true
}

// resetDone tells s that its response was reset to the client.
func (w *h2writer) resetDone(s *h2stream) {
	if !w.c.upstream && s.down != nil {
		s.respReset()
	}
}

func (w *h2writer) writeHeaders(id uint32, fields []hpack.HeaderField, end bool) {
	w.hbuf.Reset()
	for _, f := range fields {
		w.check(w.enc.WriteField(f))
	}
	block := w.hbuf.Bytes()
	w.dirty = true
	first := true
	for first || len(block) > 0 {
		frag := block[:min(len(block), int(w.maxFrame))]
		block = block[len(frag):]
		if first {
			w.check(w.fr.WriteHeaders(http2.HeadersFrameParam{
				StreamID: id, BlockFragment: frag, EndStream: end, EndHeaders: len(block) == 0,
			}))
			first = false
		} else {
			w.check(w.fr.WriteContinuation(id, len(block) == 0, frag))
		}
	}
}

// h2conn is what both ends of the relay share: a connection read by one
// goroutine and written by another.
type h2conn struct {
	nc       net.Conn
	upstream bool  // the relay is the client on it
	up       *h2up // when upstream
	bufs     *h2bufs
	br       *h2reader
	rf       *http2.Framer
	w        h2writer

	// The connection window the relay gives the peer: its size, what the
	// peer may still send, and what has left the relay (see giveBack).
	connWin  int64
	connRecv atomic.Int64
	connFree atomic.Int64

	batch h2batch // used by the reader only

	// lost collects, at the end, the streams the writer still had.
	lost []*h2stream
	// peerErr is a connection error the writer found in what the peer
	// sent (a window overflow), for the reader to end the connection with.
	peerErr atomic.Pointer[h2ConnError]
}

// connError ends the connection, from its writer, for a protocol error of
// the peer: the reader, woken, returns it and the connection ends as for
// one the reader found (GOAWAY, lingering close).
func (c *h2conn) connError(code http2.ErrCode, err error) {
	c.peerErr.CompareAndSwap(nil, &h2ConnError{code, err})
	_ = c.nc.SetReadDeadline(time.Now())
}

// setup readies c on nc; writeTimeout bounds each write to it.
func (c *h2conn) setup(nc net.Conn, bufs *h2bufs, upstream bool, writeTimeout time.Duration) {
	c.nc = nc
	c.bufs = bufs
	c.upstream = upstream
	c.br = newH2Reader(nc, &bufs.big)
	c.rf = http2.NewFramer(nil, c.br)
	c.rf.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.rf.MaxHeaderListSize = h2MaxHeaderList
	c.rf.SetReuseFrames()
	c.rf.SetMaxReadFrameSize(h2BigFrame) // as announced in ownSettings
	c.connWin = h2ConnWindow
	if upstream {
		c.connWin = h2UpConnWindow
	}
	c.connRecv.Store(c.connWin)
	c.w.setup(c, writeTimeout)
}

// ownSettings are what the relay announces: to a client, the streams it
// may open and its stream window; to an upstream, that it may not push
// and the window response streams start with. Both get the header list
// limit and the frame size.
func (c *h2conn) ownSettings() []http2.Setting {
	ss := []http2.Setting{
		{ID: http2.SettingMaxHeaderListSize, Val: h2MaxHeaderList},
		{ID: http2.SettingMaxFrameSize, Val: h2BigFrame},
	}
	if c.upstream {
		return append(ss, http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2UpStreamWindow},
			http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	}
	return append(ss, http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow},
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: h2MaxStreams})
}

// readFrame reads the next frame, first passing on what the reader holds
// if the frame is not already buffered: it is about to wait.
func (c *h2conn) readFrame() (http2.Frame, error) {
	buffered := c.frameBuffered()
	if !buffered {
		c.br.idle()
	}
	if c.batch.n > 0 && (c.batch.n >= h2MaxBatch || !buffered) {
		c.batch.flush()
	}
	f, err := c.rf.ReadFrame()
	if ce := c.peerErr.Load(); err != nil && ce != nil {
		return nil, *ce
	}
	return f, err
}

func (c *h2conn) frameBuffered() bool {
	n := c.br.Buffered()
	if n < 9 {
		return false
	}
	h, _ := c.br.Peek(3)
	return n >= 9+int(h[0])<<16|int(h[1])<<8|int(h[2])
}

// received accounts a DATA frame of n bytes against the connection
// window; false if the peer overran it. An upstream connection's window
// is given back at once; a client's as the bytes leave the relay (the
// caller's, see giveBack).
func (c *h2conn) received(n uint32) bool {
	if c.connRecv.Add(-int64(n)) < 0 {
		return false
	}
	if c.upstream {
		c.giveBack(n)
	}
	return true
}

// creditPadding gives back to the peer the window that the padding of a
// DATA frame of s took: padding never reaches the other hop. pending is
// the stream's padding not yet given back; it goes back in batches, as
// the window of its data does (passOn), so that padded frames do not
// queue a WINDOW_UPDATE each; a batch is a quarter of the smallest window
// a stream starts with, so padding alone never stalls one. False if too
// many control items wait.
func (c *h2conn) creditPadding(s *h2stream, o *h2out, pending *uint32, pad uint32) bool {
	*pending += pad
	if *pending < h2UpStreamWindow/4 {
		return true
	}
	n := *pending
	*pending = 0
	return c.w.inbox.putControl(h2item{kind: h2Credit, s: s, o: o, n: n})
}

// giveBack returns n bytes of the connection window: they have left the
// relay, written on or dropped. It batches them in quarters of the window;
// any goroutine may call it.
func (c *h2conn) giveBack(n uint32) {
	if n == 0 {
		return
	}
	for v := c.connFree.Add(int64(n)); v >= c.connWin/4; v = c.connFree.Load() {
		if c.connFree.CompareAndSwap(v, 0) {
			c.connRecv.Add(v) // before the peer can know
			c.w.inbox.put(h2item{kind: h2Credit, n: uint32(v)})
			return
		}
	}
}

// copyData copies a DATA payload of s out of the framer's buffer, counting
// what it pins in s.held. A client's payload takes its connection's window
// with it, given back when the item is released.
func (c *h2conn) copyData(s *h2stream, p []byte, end bool) h2item {
	if len(p) == 0 {
		return h2item{kind: h2Data, s: s, end: end}
	}
	buf := c.bufs.get(len(p))
	if cap(*buf) < len(p) {
		*buf = make([]byte, len(p))
	}
	d := (*buf)[:len(p)]
	copy(d, p)
	cost := int64(cap(*buf)) + h2ItemCost
	s.held.Add(cost)
	it := h2item{kind: h2Data, s: s, data: d, buf: buf, end: end, held: &s.held, cost: cost}
	if !c.upstream {
		it.from, it.fc = c, uint32(len(p))
	}
	return it
}

// lingerClose ends a connection whose writer has flushed its last frames
// (a GOAWAY): it half-closes, then reads and discards what the peer still
// sends until it closes, h2Linger passes or h2LingerBytes came. Closing
// with unread bytes would make the kernel send RST, which also drops the
// GOAWAY the peer has not read yet: the ECONNRESETs at idle closes.
func (c *h2conn) lingerClose() {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(h2Linger))
	_, _ = io.Copy(io.Discard, io.LimitReader(c.br, h2LingerBytes))
	_ = c.nc.Close()
}

// h2deadline is what a writer writes through: each write to the
// connection must end within timeout, or fails and ends the connection. To
// spare a SetWriteDeadline per write, the deadline is pushed back only
// once less than half of it is left: a stuck write fails after between
// timeout/2 and timeout.
type h2deadline struct {
	nc      net.Conn
	timeout time.Duration
	at      time.Time
	final   atomic.Bool // the connection is closing: the deadline is last's
}

func (d *h2deadline) Write(p []byte) (int, error) {
	if !d.final.Load() {
		if now := time.Now(); d.at.Sub(now) < d.timeout/2 {
			d.at = now.Add(d.timeout)
			_ = d.nc.SetWriteDeadline(d.at)
		}
	}
	return d.nc.Write(p)
}

// last bounds the writes left, those of a closing connection, to within
// t from now.
func (d *h2deadline) last(t time.Duration) {
	d.final.Store(true)
	_ = d.nc.SetWriteDeadline(time.Now().Add(t))
}

// timedOut reports whether err is a write that took too long.
func timedOut(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
