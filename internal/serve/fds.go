package serve

import (
	"errors"
	"net"
	"os"
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
// for want of a descriptor.
func (f *fdState) starved(log *zap.Logger, err error) {
	now := time.Now()
	f.starvedAt.Store(now.UnixNano())
	if ok, suppressed := f.logEvery.Allow(now); ok {
		log.Warn("accept failed: out of file descriptors; shedding new connections until some are free",
			zap.Error(err), zap.Int("suppressed", suppressed))
	}
}

// recovered records that an accept succeeded.
func (f *fdState) recovered() {
	if f.starvedAt.Load() != 0 {
		f.starvedAt.Store(0)
	}
}

// errShed: acceptWithSpare closed the connection it accepted.
var errShed = errors.New("connection shed: out of file descriptors")

// acceptWithSpare follows an accept that failed with err for want of a
// descriptor: it accepts one connection from ln's backlog into the spare
// descriptor's slot. It returns the connection when another descriptor
// turned out to be free (the shortage is over: serve it), errShed when it
// reset the connection for want of one, and err when it accepted nothing.
// Linux fails accept with EMFILE before looking at the backlog, which may
// well be empty, so the accept here is a single non-blocking attempt.
func (s *Server) acceptWithSpare(ln net.Listener, err error) (net.Conn, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, err
	}
	rc, rerr := sc.SyscallConn()
	if rerr != nil {
		return nil, err
	}
	f := &s.fds
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.spare < 0 {
		if f.spare = openSpare(); f.spare < 0 {
			return nil, err
		}
	}
	_ = syscall.Close(f.spare)
	f.spare = -1
	defer func() { f.spare = openSpare() }()
	nfd, aerr := -1, error(nil)
	// Control, not Read: a listener's RawConn cannot Read, and this is one
	// attempt on a non-blocking socket, with nothing to wait for.
	if rerr := rc.Control(func(fd uintptr) {
		nfd, _, aerr = syscall.Accept4(int(fd), syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK)
	}); rerr != nil || aerr != nil {
		return nil, err
	}
	probe := openSpare()
	if probe >= 0 {
		// Another descriptor is free: the shortage is over. The
		// connection's Go form takes that one (a dup) instead.
		_ = syscall.Close(probe)
		file := os.NewFile(uintptr(nfd), "accepted")
		conn, ferr := net.FileConn(file)
		_ = file.Close()
		if ferr != nil {
			return nil, err
		}
		return conn, nil
	}
	s.onShed()
	// A reset: the client learns at once and may retry elsewhere.
	_ = syscall.SetsockoptLinger(nfd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
	_ = syscall.Close(nfd)
	return nil, errShed
}

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
	s.fds.starvedAt.Store(0)
	return false
}
