package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// startTimeout bounds how long a contender's process may take to listen.
const startTimeout = 20 * time.Second

// process is a child process with its output in a log file.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan error
}

// startProcess runs argv in its own process group with stdout and stderr in
// dir/name.log.
func startProcess(dir, name string, argv ...string) (*process, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	return p, nil
}

// pid is the process's id.
func (p *process) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM, waits a little, then kills the process group. It is
// safe to call more than once.
func (p *process) stop() {
	if p.done == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
	}
	p.done = nil
}

// exited reports whether the process has ended, and how.
func (p *process) exited() (error, bool) {
	select {
	case err := <-p.done:
		p.done = nil
		if err == nil {
			err = errors.New("exited")
		}
		return err, true
	default:
		return nil, false
	}
}

// logTail is the end of the process's log, for error messages.
func (p *process) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimSpace(b))
}

// waitReady polls ready until it succeeds, the process exits or the start
// timeout passes.
func (p *process) waitReady(ctx context.Context, ready func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	for {
		if ready() {
			return nil
		}
		if err, ok := p.exited(); ok {
			return fmt.Errorf("%s: %v: %s", p.name, err, p.logTail())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w: %s", p.name, ctx.Err(), p.logTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// listening returns a readiness check that every addr accepts connections.
func listening(addrs ...string) func() bool {
	return func() bool {
		for _, a := range addrs {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err != nil {
				return false
			}
			c.Close()
		}
		return true
	}
}

// httpOK returns a readiness check that url answers 200.
func httpOK(url string) func() bool {
	client := &http.Client{Timeout: time.Second}
	return func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
}

// freeAddrs returns n loopback addresses that were free a moment ago. The
// peers need their ports in a configuration file, so ports are picked by
// listening on port 0 and closing; all n are held open together so they
// differ.
func freeAddrs(n int) ([]string, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	out := make([]string, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

// commandVersion is the first line a version command prints, or why it
// printed nothing.
func commandVersion(argv []string) string {
	if len(argv) == 0 {
		return "unknown"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	for line := range strings.SplitSeq(string(out), "\n") {
		line = strings.TrimSpace(line)
		// stunnel starts with a line about inetd mode before its version.
		if line != "" && !strings.HasPrefix(line, "Initializing") {
			return line
		}
	}
	if err != nil {
		return "not available: " + err.Error()
	}
	return "unknown"
}
