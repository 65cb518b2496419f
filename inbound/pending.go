package inbound

import (
	"container/list"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/internal/ratelog"
	"github.com/seed722d2a70/meshproxy/internal/serve"
)

// Pending connections: what unauthenticated peers can hold.
//
// Every connection on the inbound port is pending from accept until its
// peer has proven who it is and sent its transport header or, redirected
// from an app port in transparent mode, until detection has said what it
// carries. A silent or slow peer holds a socket, a goroutine and some memory
// for up to the handshake (then header) timeout, so pending connections are
// capped, in total and per source, in two stages each with its own budget:
//
//   - handshake: from accept until crypto/tls has verified the peer's
//     certificate chain (VerifyConnection) or, redirected, detection has
//     decided. Caps MaxPending and MaxPendingPerSource.
//   - header: from then until the transport header is read. Caps an eighth
//     of those (headerBudget). A stranger's flood, which never gets past
//     the handshake, can thus never crowd out a peer proxy that has proven
//     itself, and a verified peer that never sends its header is bounded
//     too.
//
// Admission to a stage runs under one mutex and without blocking:
//   - a source already holding the stage's per-source cap has its new
//     connection reset at once (reason source_limit, header_source_limit);
//   - at the stage's total cap, the stage's oldest connection is reset to
//     make room (reason oldest, header_oldest), the oldest of those whose
//     peer has not sent a byte yet if there are any. The oldest is the one
//     least likely to be a real peer, which sends its ClientHello at once
//     and finishes in milliseconds, and shedding it rather than the
//     newcomer means a peer holding sockets open for long cannot lock
//     everyone else out.
//
// The move from handshake to header happens inside the handshake, under
// the mutex: a connection whose peer has just proven itself is never shed
// as the oldest of the handshake stage.
//
// A third class is not pending but counted the same way: unmeshed clients'
// HTTP connections the proxy serves itself (transparent mode), capped by
// MaxUnmeshedHTTP in total and per source, where the newcomer is refused
// (reasons unmeshed_limit, unmeshed_source_limit): the proxy holds their
// request heads and idle keep-alives, which the app's own limits no longer
// bound.
//
// A source is an IPv4 address, or an IPv6 /64 (one host usually has a
// whole /64 to choose addresses from); IPv4-mapped addresses count as IPv4.
//
// The defaults (config.DefaultMaxPending and the others) come from the
// measured cost of a connection in each stage; see there.

// Shed reasons, the label values of inbound_connections_shed_total.
const (
	reasonSourceLimit         = "source_limit"
	reasonOldest              = "oldest"
	reasonHeaderSourceLimit   = "header_source_limit"
	reasonHeaderOldest        = "header_oldest"
	reasonUnmeshedLimit       = "unmeshed_limit"
	reasonUnmeshedSourceLimit = "unmeshed_source_limit"
)

// errShed: the connection was reset to make room, or refused by a cap, and
// counted then.
var errShed = errors.New("connection shed by the overload limits")

// headerBudget is the header stage's cap for a handshake stage's cap n: a
// verified peer sends its header with its last handshake flight, so few
// are ever in the stage at once, and each holds its TLS state.
func headerBudget(n int) int { return max(1, n/8) }

// pendingClass is one stage's (or the unmeshed class's) connections: a list
// from oldest to newest, counted in total and per source, under the
// limiter's mutex.
type pendingClass struct {
	max, perSource int
	// shedOldest: at the total cap, the oldest is reset for the newcomer;
	// otherwise the newcomer is refused.
	shedOldest                bool
	totalReason, sourceReason string
	gauge                     func(*Metrics, float64)

	// lists[0] holds the connections whose peer has sent nothing yet,
	// lists[1] the others, each from oldest to newest.
	lists    [2]connList
	n        int
	bySource map[netip.Addr]int
}

// connList is a list of connections from oldest to newest.
type connList struct{ l list.List }

func (cl *connList) push(pc *pendingConn) { pc.elem = cl.l.PushBack(pc) }

func (cl *connList) remove(pc *pendingConn) {
	cl.l.Remove(pc.elem)
	pc.elem = nil
}

// oldest returns the list's oldest connection, or nil.
func (cl *connList) oldest() *pendingConn {
	if e := cl.l.Front(); e != nil {
		return e.Value.(*pendingConn)
	}
	return nil
}

// list is the list of c that pc belongs in.
func (c *pendingClass) list(pc *pendingConn) *connList {
	if pc.spoke {
		return &c.lists[1]
	}
	return &c.lists[0]
}

// pendingLimiter admits connections under the caps and tracks them from
// class to class until they are released.
type pendingLimiter struct {
	metrics  *Metrics
	log      *zap.Logger
	logEvery *ratelog.Keyed

	mu                        sync.Mutex
	handshake, header, unmesh pendingClass
	closeConn                 func(net.Conn) // resets a refused or shed connection
}

// limits are a pendingLimiter's caps; 0 means the default.
type limits struct {
	maxPending, perSource                  int
	maxUnmeshedHTTP, unmeshedHTTPPerSource int
}

func newPendingLimiter(lim limits, m *Metrics, log *zap.Logger) *pendingLimiter {
	if lim.maxPending <= 0 {
		lim.maxPending = config.DefaultMaxPending
	}
	if lim.perSource <= 0 {
		lim.perSource = min(config.DefaultMaxPendingPerSource, lim.maxPending)
	}
	if lim.maxUnmeshedHTTP <= 0 {
		lim.maxUnmeshedHTTP = config.DefaultMaxUnmeshedHTTP
	}
	if lim.unmeshedHTTPPerSource <= 0 {
		lim.unmeshedHTTPPerSource = min(config.DefaultMaxUnmeshedHTTPPerSource, lim.maxUnmeshedHTTP)
	}
	hdr := headerBudget(lim.maxPending)
	pending := func(m *Metrics, d float64) { m.pendingDelta(d) }
	return &pendingLimiter{
		metrics: m, log: log, logEvery: ratelog.NewKeyed(time.Second), closeConn: serve.Reset,
		handshake: pendingClass{
			max: lim.maxPending, perSource: lim.perSource, shedOldest: true,
			totalReason: reasonOldest, sourceReason: reasonSourceLimit, gauge: pending,
			bySource: map[netip.Addr]int{},
		},
		header: pendingClass{
			max: hdr, perSource: min(lim.perSource, hdr), shedOldest: true,
			totalReason: reasonHeaderOldest, sourceReason: reasonHeaderSourceLimit, gauge: pending,
			bySource: map[netip.Addr]int{},
		},
		unmesh: pendingClass{
			max: lim.maxUnmeshedHTTP, perSource: lim.unmeshedHTTPPerSource,
			totalReason: reasonUnmeshedLimit, sourceReason: reasonUnmeshedSourceLimit,
			gauge:    func(m *Metrics, d float64) { m.unmeshedDelta(d) },
			bySource: map[netip.Addr]int{},
		},
	}
}

// pendingConn is an admitted connection. Its Close releases it too, so a
// connection closed before its handler runs (at shutdown, say) gives its
// place back.
type pendingConn struct {
	net.Conn
	l    *pendingLimiter
	src  netip.Addr
	elem *list.Element // in its class's list, under l.mu
	// Under l.mu: the class it is counted in, nil once released or shed;
	// shed once reset to make room or refused by a cap; spoke once its
	// peer has sent a byte.
	class       *pendingClass
	shed, spoke bool
}

// admit is serve.Config.Admit: it returns conn as a *pendingConn in the
// handshake stage, or nil after resetting it.
func (l *pendingLimiter) admit(conn net.Conn) net.Conn {
	pc := &pendingConn{Conn: conn, l: l, src: sourceAddr(conn)}
	l.mu.Lock()
	victim, reason := l.enter(&l.handshake, pc)
	l.mu.Unlock()
	l.settle(victim, reason)
	if pc.shed {
		return nil
	}
	return pc
}

// enter moves pc from its class, if any, into c, under l.mu. It returns a
// connection to reset and why: pc itself when refused by a cap (pc is then
// shed), or the oldest of c to make room.
func (l *pendingLimiter) enter(c *pendingClass, pc *pendingConn) (victim *pendingConn, reason string) {
	if pc.class == c {
		return nil, ""
	}
	if pc.class != nil {
		l.unlink(pc)
	}
	if c.bySource[pc.src] >= c.perSource {
		pc.shed = true
		return pc, c.sourceReason
	}
	if c.n >= c.max {
		if !c.shedOldest {
			pc.shed = true
			return pc, c.totalReason
		}
		victim = c.lists[0].oldest()
		if victim == nil {
			victim = c.lists[1].oldest()
		}
		l.unlink(victim)
		victim.shed = true
		reason = c.totalReason
	}
	l.link(c, pc)
	return victim, reason
}

// settle resets a connection enter chose, outside l.mu, and counts and logs
// it.
func (l *pendingLimiter) settle(victim *pendingConn, reason string) {
	if victim == nil {
		return
	}
	l.closeConn(victim.Conn)
	l.metrics.connectionShed(reason)
	if ok, suppressed := l.logEvery.Allow(reason, time.Now()); ok {
		l.log.Warn("overload limit: connection reset",
			zap.String("reason", reason), zap.Stringer("client", victim.RemoteAddr()),
			zap.Int("max_pending", l.handshake.max), zap.Int("max_pending_per_source", l.handshake.perSource),
			zap.Int("suppressed", suppressed))
	}
}

// link appends pc to c as its newest, under l.mu.
func (l *pendingLimiter) link(c *pendingClass, pc *pendingConn) {
	pc.class = c
	c.list(pc).push(pc)
	c.n++
	c.bySource[pc.src]++
	c.gauge(l.metrics, 1)
}

// unlink removes pc from its class, under l.mu.
func (l *pendingLimiter) unlink(pc *pendingConn) {
	c := pc.class
	c.list(pc).remove(pc)
	pc.class = nil
	c.n--
	if c.bySource[pc.src]--; c.bySource[pc.src] <= 0 {
		delete(c.bySource, pc.src)
	}
	c.gauge(l.metrics, -1)
}

// count returns the number of pending connections, in both stages.
func (l *pendingLimiter) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.handshake.n + l.header.n
}

// moveTo moves pc into c, unless it has been shed, in which case (or when
// c refuses it) it returns errShed. Safe on a nil pc, which no cap counts.
func (pc *pendingConn) moveTo(c func(*pendingLimiter) *pendingClass) error {
	if pc == nil {
		return nil
	}
	l := pc.l
	l.mu.Lock()
	if pc.shed {
		l.mu.Unlock()
		return errShed
	}
	victim, reason := l.enter(c(l), pc)
	l.mu.Unlock()
	l.settle(victim, reason)
	if pc.shed {
		return errShed
	}
	return nil
}

// heard records that pc's peer has sent its first byte: pc is then shed
// for room only when no silent connection is left to shed.
func (pc *pendingConn) heard() {
	if pc == nil {
		return
	}
	l := pc.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if pc.spoke || pc.class == nil {
		return
	}
	c := pc.class
	c.list(pc).remove(pc)
	pc.spoke = true
	c.list(pc).push(pc)
}

// verified moves pc from the handshake stage to the header stage: its peer
// has presented a verified certificate chain. Called from inside the
// handshake (tls.Config.VerifyConnection).
func (pc *pendingConn) verified() error {
	return pc.moveTo(func(l *pendingLimiter) *pendingClass { return &l.header })
}

// servingUnmeshed moves pc into the class of unmeshed clients' connections
// the proxy serves itself.
func (pc *pendingConn) servingUnmeshed() error {
	return pc.moveTo(func(l *pendingLimiter) *pendingClass { return &l.unmesh })
}

// release ends pc's counting: it has authenticated and sent its header, or
// its detection decided, or it is closing. It reports whether pc had been
// shed instead. Safe on a nil pc and more than once.
func (pc *pendingConn) release() (shed bool) {
	if pc == nil {
		return false
	}
	l := pc.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if pc.class != nil {
		l.unlink(pc)
	}
	return pc.shed
}

// Close releases the connection and closes it.
func (pc *pendingConn) Close() error {
	pc.release()
	return pc.Conn.Close()
}

// sourceAddr is conn's source for the per-source caps: its IPv4 address
// (IPv4-mapped ones unmapped), or its IPv6 /64.
func sourceAddr(conn net.Conn) netip.Addr {
	a, ok := conn.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	ip := a.AddrPort().Addr().Unmap().WithZone("")
	if ip.Is6() {
		return netip.PrefixFrom(ip, 64).Masked().Addr()
	}
	return ip
}
