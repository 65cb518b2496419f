package serve

import (
	"net"
	"os"
	"syscall"
)

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
