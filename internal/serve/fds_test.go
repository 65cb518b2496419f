package serve

import (
	"context"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
)

// serveEcho serves echo with s on a new loopback listener until the test
// ends.
func serveEcho(t *testing.T, s *Server) net.Listener {
	t.Helper()
	ln := listen(t)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln, echo) }()
	t.Cleanup(func() {
		_ = s.Shutdown(context.Background())
		<-served
	})
	return ln
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) uint64 {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return uint64(len(entries))
}

// Out of file descriptors, the accept loop stays up, counts the failure,
// resets the connection waiting in the backlog with its spare descriptor,
// and reports itself starved; once descriptors are free again it says so
// by itself and serves the next client.
func TestAcceptOutOfFDs(t *testing.T) {
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var shed atomic.Int64
	// No reserve: this is about running out (TestAcceptKeepsAReserve).
	s := New(Config{Log: zap.NewNop(), Direction: "inbound", Metrics: m, OnShed: func() { shed.Add(1) }, Reserve: -1})
	ln := serveEcho(t, s)
	// A client first, so the loop is known to be running with its spare.
	first, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	for s.active.Load() != 0 { // its server side closed too
		time.Sleep(time.Millisecond)
	}

	limit := old
	limit.Cur = openFDs(t) + 16
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &limit); err != nil {
		t.Skipf("cannot lower the open-file limit: %v", err)
	}
	defer func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) }()
	var fillers []int
	closeFillers := func() {
		for _, fd := range fillers {
			_ = syscall.Close(fd)
		}
		fillers = nil
	}
	defer closeFillers()
	fill := func() {
		for {
			fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
			if err != nil {
				return
			}
			fillers = append(fillers, fd)
		}
	}
	fill()
	var c net.Conn
	for attempt := 1; ; attempt++ {
		// One descriptor free: the client's socket takes it, the server
		// has none left for its side.
		_ = syscall.Close(fillers[len(fillers)-1])
		fillers = fillers[:len(fillers)-1]
		// The client sees a reset, when connecting or reading.
		c, err = net.Dial("tcp", ln.Addr().String())
		if err == nil {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Read(make([]byte, 1))
		}
		if err != nil && !os.IsTimeout(err) {
			break
		}
		// The server found a descriptor after all: one the process freed
		// since the fill (a socket of the first client, a finalizer). Fill
		// again and retry; a loop that never resets fails.
		if attempt == 3 {
			t.Fatalf("client in the backlog: %v, want a reset at once", err)
		}
		if c != nil {
			c.Close()
			c = nil
		}
		fill()
	}
	if c != nil {
		defer c.Close()
	}
	t.Logf("client in the backlog: %v", err)
	if n := testutil.ToFloat64(m.errors.WithLabelValues("inbound", "emfile")); n < 1 {
		t.Errorf("accept_errors_total{reason=emfile} = %v, want at least 1", n)
	}
	if shed.Load() < 1 {
		t.Error("no connection counted as shed")
	}
	// The client's socket may be gone (a reset while connecting): take
	// any descriptor free again.
	for {
		fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			break
		}
		fillers = append(fillers, fd)
	}
	if !s.Starved() {
		t.Error("Starved() = false while out of descriptors")
	}

	if c != nil {
		c.Close()
	}
	closeFillers()
	if s.Starved() {
		t.Error("Starved() = true with descriptors free again")
	}
	good, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if _, err := good.Write([]byte("ok")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	_ = good.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(good, buf); err != nil || string(buf) != "ok" {
		t.Fatalf("after recovery: %q, %v", buf, err)
	}
}

// The accept loop leaves the top Reserve descriptors of the limit to the
// rest of the process (the admin server's probes): a connection accepted
// into one is reset and counted, the server reports itself starved while
// the lowest free descriptor is in the reserve, and recovers by itself.
func TestAcceptKeepsAReserve(t *testing.T) {
	const reserve = 8
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	var shed atomic.Int64
	s := New(Config{Log: zap.NewNop(), OnShed: func() { shed.Add(1) }, Reserve: reserve})
	ln := serveEcho(t, s)
	roundTrip := func() error {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ok")); err != nil {
			return err
		}
		_, err = io.ReadFull(c, make([]byte, 2))
		return err
	}
	if err := roundTrip(); err != nil {
		t.Fatal(err)
	}
	for s.active.Load() != 0 { // its server side closed too
		time.Sleep(time.Millisecond)
	}

	limit := old
	limit.Cur = openFDs(t) + 3*reserve
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &limit); err != nil {
		t.Skipf("cannot lower the open-file limit: %v", err)
	}
	defer func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) }()
	// Fill every descriptor below the reserve, leaving the reserve free.
	var fillers []int
	defer func() {
		for _, fd := range fillers {
			_ = syscall.Close(fd)
		}
	}()
	for {
		fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if fd >= int(limit.Cur)-reserve {
			_ = syscall.Close(fd)
			break
		}
		fillers = append(fillers, fd)
	}
	// The client's socket takes one descriptor of the reserve, the
	// server's side another: reset at once.
	err := roundTrip()
	if err == nil || os.IsTimeout(err) {
		t.Fatalf("a client while only the reserve is free: %v, want a reset at once", err)
	}
	if shed.Load() != 1 {
		t.Errorf("%d connections counted as shed, want 1", shed.Load())
	}
	if !s.Starved() {
		t.Error("Starved() = false with only the reserve free")
	}
	// The reserve is still free for the rest of the process.
	fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("the reserve was taken: %v", err)
	}
	_ = syscall.Close(fd)

	for _, fd := range fillers[len(fillers)-2*reserve:] {
		_ = syscall.Close(fd)
	}
	fillers = fillers[:len(fillers)-2*reserve]
	if s.Starved() {
		t.Error("Starved() = true with descriptors free below the reserve")
	}
	if err := roundTrip(); err != nil {
		t.Errorf("after recovery: %v", err)
	}
}
