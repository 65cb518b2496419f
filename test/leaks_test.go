package test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// The test binary runs many proxies, SPIRE and Kubernetes harnesses one
// after another, and their background goroutines and sockets come and go on
// their own schedule. So a leak check that counts the whole process is
// flaky. These helpers count only what a test owns: goroutines started
// since a baseline that run the module's code, and sockets on given ports.

// goroutineSnapshot is the set of goroutine IDs alive at a moment.
type goroutineSnapshot map[string]bool

// takeGoroutines records the goroutines alive now.
func takeGoroutines() goroutineSnapshot {
	s := goroutineSnapshot{}
	for _, g := range goroutineStacks() {
		s[goroutineID(g)] = true
	}
	return s
}

// newProxyGoroutines returns the stacks of goroutines started since s that
// run the proxy's own packages (not this test package's).
func (s goroutineSnapshot) newProxyGoroutines() []string {
	const module = "github.com/seed722d2a70/meshproxy/"
	var out []string
	for _, g := range goroutineStacks() {
		if s[goroutineID(g)] {
			continue
		}
		for _, line := range strings.Split(g, "\n") {
			if strings.Contains(line, module) && !strings.Contains(line, module+"test") {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

func goroutineStacks() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Split(string(buf[:n]), "\n\n")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// goroutineID is the "goroutine N" prefix of a stack.
func goroutineID(stack string) string {
	f := strings.Fields(stack)
	if len(f) < 2 {
		return stack
	}
	return f[1]
}

// socketsOnPorts lists this process's open TCP sockets whose local or
// remote port is one of ports, as "local->remote".
func socketsOnPorts(t testing.TB, ports ...uint16) []string {
	t.Helper()
	inodes := map[string]bool{}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot list file descriptors: %v", err)
	}
	for _, e := range entries {
		link, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	want := map[uint16]bool{}
	for _, p := range ports {
		want[p] = true
	}
	var out []string
	for _, table := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			continue // no IPv6
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			f := strings.Fields(sc.Text())
			if len(f) < 10 || !inodes[f[9]] {
				continue
			}
			if want[hexPort(f[1])] || want[hexPort(f[2])] {
				out = append(out, fmt.Sprintf("%s->%s state %s", f[1], f[2], f[3]))
			}
		}
	}
	return out
}

// hexPort is the port of a /proc/net/tcp address ("0100007F:1F90").
func hexPort(addr string) uint16 {
	i := strings.LastIndexByte(addr, ':')
	p, err := strconv.ParseUint(addr[i+1:], 16, 16)
	if err != nil {
		return 0
	}
	return uint16(p)
}
