package serve

import (
	"errors"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/seed722d2a70/meshproxy/internal/ratelog"
)

// Running out of file descriptors.
//
// When accept(2) fails with EMFILE (this process's limit) or ENFILE (the
// system's), the connection it would have returned stays in the kernel's
// backlog, complete from the client's point of view, and the listening
// socket stays readable: a loop that only retries spins, and one that only
// backs off leaves every client in the backlog waiting, for as long as the
// shortage lasts, on a proxy that cannot serve it, while the backlog's
// overflow silently drops new SYNs (clients then retry for minutes).
//
// So a server keeps one spare descriptor (an open /dev/null). Out of
// descriptors, it closes the spare, accepts one connection with the slot,
// closes that connection at once (the client sees a reset and can retry
// elsewhere), and takes the spare back: the backlog drains as fast as
// clients arrive and nobody waits on a connection that cannot be served.
// Linux fails accept with EMFILE whether or not a connection waits, so
// with an empty backlog (or the spare's slot taken by another thread) the
// loop backs off as before, at most a second, and tries again.
//
// Meanwhile the server reports itself starved (Starved), which /ready
// turns into "not ready", so the pod leaves its Services' endpoints until
// descriptors free up; Starved then notices by itself, without needing a
// new connection to arrive.
//
// The rest of the process needs descriptors too, above all the admin
// server: kubelet probes /live and /ready on a new connection each time,
// and a proxy whose data path has taken every freed descriptor fails its
// liveness probe and is killed. So the accept loops keep a reserve: an
// accepted connection whose descriptor is among the top Reserve of the
// limit (RLIMIT_NOFILE) is reset, counted and reported as if the process
// were out. Descriptors are allocated lowest first, so a descriptor that
// high means every one below it is taken: the check costs a getrlimit, no
// count of open files.

// outOfFDs reports whether an accept error means no descriptor was free.
func outOfFDs(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// fdState is a server's spare descriptor and starvation state.
type fdState struct {
	mu    sync.Mutex
	spare int // -1: none held
	// starvedAt is when an accept last failed for want of a descriptor,
	// in Unix nanoseconds; 0 once descriptors are known to be free again.
	starvedAt atomic.Int64
	logEvery  *ratelog.Limiter
}

func openSpare() int {
	fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return fd
}

// reserve takes the spare descriptor if none is held.
func (f *fdState) reserve() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.spare < 0 {
		f.spare = openSpare()
	}
}

// release gives the spare descriptor back, at shutdown.
func (f *fdState) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.spare >= 0 {
		_ = syscall.Close(f.spare)
		f.spare = -1
	}
}

// starved records, and logs at most once a second, an accept that failed
// for want of a descriptor, or whose connection took one of the reserve.
func (f *fdState) starved(log *zap.Logger, err error) {
	now := time.Now()
	f.starvedAt.Store(now.UnixNano())
	if ok, suppressed := f.logEvery.Allow(now); ok {
		log.Warn("accept: out of file descriptors; shedding new connections until some are free",
			zap.Error(err), zap.Int("suppressed", suppressed))
	}
}

// errReserve: an accepted connection took a descriptor of the reserve.
var errReserve = errors.New("descriptor within the reserve kept for the rest of the process")

// DefaultReserve is the reserve for an open-file limit: a sixteenth of it,
// between 16 and 256.
func DefaultReserve(limit uint64) int {
	return int(min(max(limit/16, 16), 256))
}

// reserveFrom returns the lowest descriptor number of the reserve, and
// false when there is none (no reserve, or the limit is unknown).
func (s *Server) reserveFrom() (int, bool) {
	if s.reserve < 0 {
		return 0, false
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > math.MaxInt32 {
		return 0, false
	}
	r := s.reserve
	if r == 0 {
		r = DefaultReserve(lim.Cur)
	}
	return int(lim.Cur) - r, true
}

// inReserve reports whether conn's descriptor is within the reserve.
func (s *Server) inReserve(conn net.Conn) bool {
	from, ok := s.reserveFrom()
	if !ok {
		return false
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	in := false
	_ = rc.Control(func(fd uintptr) { in = int(fd) >= from })
	return in
}

// recovered records that an accept succeeded.
func (f *fdState) recovered() {
	if f.starvedAt.Load() != 0 {
		f.starvedAt.Store(0)
	}
}

// errShed: acceptWithSpare closed the connection it accepted.
var errShed = errors.New("connection shed: out of file descriptors")

// Starved reports whether an accept loop of the server has lately failed
// for want of a file descriptor and none has become free since. It checks
// by opening one: a loop blocked in accept would not find out until the
// next client arrived, and a pod out of its Services' endpoints gets none.
func (s *Server) Starved() bool {
	if s.fds.starvedAt.Load() == 0 {
		return false
	}
	// Not while acceptWithSpare has lent out the spare's slot.
	s.fds.mu.Lock()
	defer s.fds.mu.Unlock()
	fd := openSpare()
	if fd < 0 {
		return true
	}
	_ = syscall.Close(fd)
	if from, ok := s.reserveFrom(); ok && fd >= from {
		return true // the lowest free descriptor is in the reserve
	}
	s.fds.starvedAt.Store(0)
	return false
}
