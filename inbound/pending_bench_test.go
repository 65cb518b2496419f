package inbound

import (
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkPendingHandshakeMemory measures what a silent connection costs
// the inbound proxy while it waits for the peer's first handshake byte: the
// Go heap and goroutine stacks, and the RSS, per pending connection. The
// clients are bare sockets, so they add nothing to the process's Go memory.
func BenchmarkPendingHandshakeMemory(b *testing.B) {
	const conns = 1000
	p, addr, _ := budgetProxy(b, conns)

	var heap, stack, rss float64
	for b.Loop() {
		before := memNow()
		fds := make([]int, 0, conns)
		for range conns {
			fd, err := rawConnect(addr)
			if err != nil {
				b.Fatal(err)
			}
			fds = append(fds, fd)
		}
		waitPending(b, p, conns)
		after := memNow()
		heap += float64(after.heap-before.heap) / conns
		stack += float64(after.stack-before.stack) / conns
		rss += float64(after.rss-before.rss) / conns
		for _, fd := range fds {
			_ = syscall.Close(fd)
		}
		waitPending(b, p, 0)
	}
	n := float64(b.N)
	b.ReportMetric(heap/n, "heap-B/pending")
	b.ReportMetric(stack/n, "stack-B/pending")
	b.ReportMetric((heap+stack)/n, "B/pending")
	b.ReportMetric(rss/n, "rss-B/pending")
}

type memSample struct{ heap, stack, rss int64 }

// memNow returns the live heap and stacks after a collection, and the RSS.
func memNow() memSample {
	runtime.GC()
	runtime.GC() // a second cycle frees what the first one's finalizers let go
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{heap: int64(ms.HeapAlloc), stack: int64(ms.StackInuse), rss: rssBytes()}
}

func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// rawConnect opens a TCP connection as a bare file descriptor.
func rawConnect(addr *net.TCPAddr) (int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	sa := &syscall.SockaddrInet4{Port: addr.Port}
	copy(sa.Addr[:], addr.IP.To4())
	if err := syscall.Connect(fd, sa); err != nil {
		_ = syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

// waitPending waits until the proxy holds n connections that have not yet
// authenticated.
func waitPending(tb testing.TB, p *Proxy, n int) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for p.pendingCount() != n {
		if time.Now().After(deadline) {
			tb.Fatalf("%d pending connections, want %d", p.pendingCount(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pendingCount is the number of pending connections.
func (p *Proxy) pendingCount() int { return p.pending.count() }
