package inbound

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/config"
	"github.com/seed722d2a70/meshproxy/internal/ratelog"
)

// Pending connections: what unauthenticated peers can hold.
//
// Every connection on the inbound port is pending from accept until its
// peer has proven who it is (the mTLS handshake) or, redirected from an
// app port in transparent mode, until detection has said what it carries.
// A silent or slow peer holds a socket, a goroutine and some memory for up
// to the handshake timeout, so pending connections are capped, in total and
// per source address; authenticated ones are not counted at all, so
// strangers can never crowd out a peer proxy that has proven itself.
//
// Admission runs in the accept loop, under a mutex and without blocking:
//   - a source already holding MaxPendingPerSource pending connections has
//     its new one reset at once (reason source_limit);
//   - when MaxPending are pending in total, the oldest pending connection is
//     reset to make room (reason oldest). The oldest is the one least likely
//     to be a real peer, which finishes its handshake in milliseconds, and
//     shedding it rather than the newcomer means a peer holding sockets open
//     for long cannot lock everyone else out.
//
// The defaults (config.DefaultMaxPending, DefaultMaxPendingPerSource) come
// from the measured cost of a pending connection; see there.

// pendingLimiter admits connections under the caps and tracks them until
// they authenticate or close.
type pendingLimiter struct {
	max, perSource int
	metrics        *Metrics
	log            *zap.Logger
	logEvery       *ratelog.Limiter

	mu        sync.Mutex
	oldest    *pendingConn // admission order: a list from oldest to newest
	newest    *pendingConn
	n         int
	bySource  map[netip.Addr]int
	closeConn func(net.Conn) // resets a refused or shed connection
}

func newPendingLimiter(max, perSource int, m *Metrics, log *zap.Logger) *pendingLimiter {
	if max <= 0 {
		max = config.DefaultMaxPending
	}
	if perSource <= 0 {
		perSource = config.DefaultMaxPendingPerSource
	}
	return &pendingLimiter{
		max: max, perSource: perSource, metrics: m, log: log, logEvery: ratelog.New(time.Second),
		bySource: map[netip.Addr]int{}, closeConn: resetConn,
	}
}

// pendingConn is an admitted connection while it is pending. Its Close
// ends the pending state too, so a connection closed before its handler
// runs (at shutdown, say) gives its place back.
type pendingConn struct {
	net.Conn
	l          *pendingLimiter
	src        netip.Addr
	prev, next *pendingConn
	// Under l.mu: released once authenticated or closed; shed when reset
	// to make room.
	released, shed bool
}

// admit is serve.Config.Admit: it returns conn as a *pendingConn, or nil
// after resetting it.
func (l *pendingLimiter) admit(conn net.Conn) net.Conn {
	src := sourceAddr(conn)
	l.mu.Lock()
	if l.bySource[src] >= l.perSource {
		l.mu.Unlock()
		l.closeConn(conn)
		l.refused("source_limit", conn)
		return nil
	}
	var victim *pendingConn
	if l.n >= l.max {
		victim = l.oldest
		l.unlink(victim)
		victim.shed = true
	}
	pc := &pendingConn{Conn: conn, l: l, src: src}
	l.link(pc)
	l.mu.Unlock()
	l.metrics.pendingDelta(1)
	if victim != nil {
		l.metrics.pendingDelta(-1)
		l.closeConn(victim.Conn)
		l.refused("oldest", victim.Conn)
	}
	return pc
}

// refused counts a reset connection and logs it, at most once a second.
func (l *pendingLimiter) refused(reason string, conn net.Conn) {
	l.metrics.connectionShed(reason)
	if ok, suppressed := l.logEvery.Allow(time.Now()); ok {
		l.log.Warn("too many pending connections: connection reset",
			zap.String("reason", reason), zap.Stringer("client", conn.RemoteAddr()),
			zap.Int("max_pending", l.max), zap.Int("max_pending_per_source", l.perSource),
			zap.Int("suppressed", suppressed))
	}
}

// link appends pc as the newest, under l.mu.
func (l *pendingLimiter) link(pc *pendingConn) {
	pc.prev = l.newest
	if l.newest != nil {
		l.newest.next = pc
	} else {
		l.oldest = pc
	}
	l.newest = pc
	l.n++
	l.bySource[pc.src]++
}

// unlink removes pc, under l.mu.
func (l *pendingLimiter) unlink(pc *pendingConn) {
	if pc.prev != nil {
		pc.prev.next = pc.next
	} else {
		l.oldest = pc.next
	}
	if pc.next != nil {
		pc.next.prev = pc.prev
	} else {
		l.newest = pc.prev
	}
	pc.prev, pc.next = nil, nil
	l.n--
	if l.bySource[pc.src]--; l.bySource[pc.src] <= 0 {
		delete(l.bySource, pc.src)
	}
}

// count returns the number of pending connections.
func (l *pendingLimiter) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// release ends pc's pending state: its peer has authenticated, or the
// connection is closing. It reports whether pc had been shed to make room
// instead. Safe on a nil pc and more than once.
func (pc *pendingConn) release() (shed bool) {
	if pc == nil {
		return false
	}
	l := pc.l
	l.mu.Lock()
	if pc.released || pc.shed {
		l.mu.Unlock()
		return pc.shed
	}
	pc.released = true
	l.unlink(pc)
	l.mu.Unlock()
	l.metrics.pendingDelta(-1)
	return false
}

// Close releases the pending state and closes the connection.
func (pc *pendingConn) Close() error {
	pc.release()
	return pc.Conn.Close()
}

// sourceAddr is conn's peer address, IPv4-mapped ones as IPv4.
func sourceAddr(conn net.Conn) netip.Addr {
	if a, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// resetConn closes conn with a reset rather than a FIN: the peer is owed
// no orderly goodbye, and no socket lingers in FIN_WAIT on our side.
func resetConn(conn net.Conn) {
	if tc, ok := conn.(interface{ SetLinger(int) error }); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
