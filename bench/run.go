package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// noiseThreshold is how many CPUs of other work make a run noisy.
const noiseThreshold = 0.2

// fileLimit is the open-file limit a run asks for.
const fileLimit = 200000

// measure is one table's worth of work.
type measure struct {
	table      *Table
	contenders []string
	timeout    time.Duration
	// fresh measures get a new instance of the contender per attempt.
	fresh bool
	run   func(ctx context.Context, inst *Instance) (map[string]float64, error)
}

// Run starts the apps and every contender, runs every measure opts.Repeat
// times with the contenders interleaved, stops everything, and returns the
// report. A failing contender or measurement is recorded in its table and
// the run goes on; Run fails only when the run cannot start at all.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if len(opts.Contenders) == 0 {
		opts.Contenders = AllContenders()
	}
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	report := &Report{
		Smoke:    opts.Smoke,
		Started:  time.Now(),
		Settings: opts.settings(),
		Machine: DescribeMachine(map[string][]string{
			"meshproxy": {opts.Meshproxy, "version"},
			"stunnel":   {stunnelBinary, "-version"},
			"haproxy":   {"haproxy", "-v"},
			"openssl":   {"openssl", "version"},
		}),
		Notes: runNotes(),
	}
	limit, err := RaiseFileLimit(fileLimit)
	if err != nil {
		return nil, err
	}
	budget := connBudget(limit)
	if opts.IdleConns > budget-opts.IdleWorkers {
		report.Notes = append(report.Notes, fmt.Sprintf("The memory measure holds %d connections, not %d: the open-file limit here is %d "+
			"and cannot be raised, and a client-side proxy needs two sockets per connection.", budget-opts.IdleWorkers, opts.IdleConns, limit))
		opts.IdleConns = budget - opts.IdleWorkers
		report.Settings = opts.settings()
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, err
	}
	caDir, certs, err := NewCA(opts.Dir)
	if err != nil {
		return nil, err
	}
	addrs, err := freeAddrs(4)
	if err != nil {
		return nil, err
	}
	backends := Endpoints{Sink: addrs[0], Echo: addrs[1], HTTP: addrs[2], GRPC: addrs[3]}
	apps, err := startProcess(opts.Dir, "apps", opts.Self, "apps",
		"-sink", backends.Sink, "-echo", backends.Echo, "-http", backends.HTTP, "-grpc", backends.GRPC)
	if err != nil {
		return nil, err
	}
	defer apps.stop()
	if err := apps.waitReady(ctx, listening(addrs...)); err != nil {
		return nil, err
	}
	env := Env{Dir: opts.Dir, Certs: certs, CADir: caDir, Meshproxy: opts.Meshproxy, Self: opts.Self, Backends: backends, MaxConns: budget}

	r := &runner{env: env, opts: opts, progress: progress, running: map[string]*Instance{}}
	defer r.stopAll()
	mctx, cancel := context.WithTimeout(ctx, opts.MaxTime-time.Since(report.Started))
	defer cancel()
	var noisiest float64
	for _, m := range r.measures() {
		if !selected(m.table.Name, opts.Measures) {
			continue
		}
		if mctx.Err() != nil {
			report.Notes = append(report.Notes, fmt.Sprintf("The run reached its time limit (%s): %q and the measures after it were not run.", opts.MaxTime, m.table.Title))
			break
		}
		m.table.LoadBefore = loadAverage()
		report.Tables = append(report.Tables, m.table)
		before, err := takeCPUSnapshot()
		r.runMeasure(mctx, m)
		if after, err2 := takeCPUSnapshot(); err == nil && err2 == nil {
			other := otherCores(before, after)
			m.table.OtherCPUs = &other
			noisiest = max(noisiest, other)
		}
	}
	if noisiest > noiseThreshold {
		report.Notes = append(report.Notes, fmt.Sprintf("**Noisy run**: other work kept up to %.2f of the %d CPUs busy during a measure "+
			"(each table says how much). Ranges are wider and medians less certain than on a quiet machine.", noisiest, report.Machine.Cores))
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	report.Machine.LoadEnd = loadAverage()
	report.Elapsed = time.Since(report.Started)
	report.Finish()
	return report, nil
}

// runNotes are the facts a reader needs to compare the contenders.
func runNotes() []string {
	return []string{
		"Every contender but direct is a client-side and a server-side proxy process with mutual TLS 1.3 between them; " +
			"certificates are ECDSA P-256 SVIDs from one dev CA. The load generator, the apps and the proxies are separate processes on loopback.",
		"Cipher: AES-128-GCM everywhere (crypto/tls picks it on CPUs with AES instructions; stunnel and haproxy are pinned to " + tls13Suite + "). " +
			"Key exchange is each stack's default: Go's (X25519MLKEM768 between Go peers) for go-tls and meshproxy, OpenSSL's for stunnel and haproxy.",
		"Session resumption is each stack's default: on for go-tls (an LRU cache), meshproxy, stunnel and haproxy.",
		"stunnel and haproxy run in TCP mode and carry HTTP and gRPC as opaque bytes; meshproxy carries the bulk, ping-pong, new-connection and memory traffic on opaque ports " +
			"and the HTTP and gRPC traffic on ports where it detects the protocol, so those rows show whatever its HTTP handling costs.",
		"Logging: warnings only for every proxy. Threads: haproxy and the Go programs use every core by default; stunnel runs a thread per connection.",
		"Ratio columns divide the contender's median by the baseline's median; added columns subtract direct's median.",
	}
}

// runner holds the running contenders of a run.
type runner struct {
	env      Env
	opts     Options
	progress io.Writer
	running  map[string]*Instance
	seq      int
}

func (r *runner) stopAll() {
	for _, inst := range r.running {
		inst.Stop()
	}
}

// instance returns the running instance of a contender, starting (or
// restarting, if a process died) it as needed.
func (r *runner) instance(ctx context.Context, name string) (*Instance, error) {
	if inst, ok := r.running[name]; ok {
		err := inst.alive()
		if err == nil {
			return inst, nil
		}
		fmt.Fprintf(r.progress, "%s died, restarting: %v\n", name, err)
		inst.Stop()
		delete(r.running, name)
	}
	r.seq++
	inst, err := startContender(ctx, r.env, name, r.seq)
	if err != nil {
		return nil, err
	}
	r.running[name] = inst
	return inst, nil
}

// runMeasure runs m for every repetition and contender, rotating the order
// of contenders each repetition so none always goes first.
func (r *runner) runMeasure(ctx context.Context, m measure) {
	for rep := range r.opts.Repeat {
		order := rotate(m.contenders, rep)
		for _, name := range order {
			if ctx.Err() != nil {
				return
			}
			start := time.Now()
			values, err := r.attempt(ctx, m, name)
			if err != nil {
				m.table.Fail(name, err)
				fmt.Fprintf(r.progress, "%-14s %d/%d %-10s FAILED: %v\n", m.table.Name, rep+1, r.opts.Repeat, name, err)
				continue
			}
			for k, v := range values {
				m.table.Add(name, k, v)
			}
			fmt.Fprintf(r.progress, "%-14s %d/%d %-10s %s (%.1fs)\n", m.table.Name, rep+1, r.opts.Repeat, name, formatValues(values), time.Since(start).Seconds())
		}
	}
}

func (r *runner) attempt(ctx context.Context, m measure, name string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	if m.fresh {
		r.seq++
		inst, err := startContender(ctx, r.env, name, r.seq)
		if err != nil {
			return nil, err
		}
		defer inst.Stop()
		return m.run(ctx, inst)
	}
	inst, err := r.instance(ctx, name)
	if err != nil {
		return nil, err
	}
	values, err := m.run(ctx, inst)
	if err == nil {
		err = inst.alive()
	}
	return values, err
}

// selected reports whether the table name is among the selected names or
// name prefixes; nothing selected means everything is.
func selected(name string, sel []string) bool {
	if len(sel) == 0 {
		return true
	}
	for _, s := range sel {
		if s != "" && strings.HasPrefix(name, s) {
			return true
		}
	}
	return false
}

// rotate returns s rotated left by n.
func rotate(s []string, n int) []string {
	if len(s) == 0 {
		return nil
	}
	n %= len(s)
	return append(append([]string{}, s[n:]...), s[:n]...)
}

// only keeps the contenders of want that are in have, in have's order.
func only(have []string, want ...string) []string {
	var out []string
	for _, h := range have {
		for _, w := range want {
			if h == w {
				out = append(out, h)
			}
		}
	}
	return out
}

func formatValues(v map[string]float64) string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%s", k, formatNum(v[k]))
	}
	return strings.Join(parts, " ")
}
