package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cpuSnapshot is what noise is computed from: the machine's busy CPU time
// and this run's own (this process and its children).
type cpuSnapshot struct {
	at      time.Time
	machine float64 // user+nice+system seconds of every CPU
	own     float64 // this process, its children, and children it reaped
}

// takeCPUSnapshot reads /proc. The load average is no measure of other
// work during a benchmark, which keeps the CPUs busy itself; this is:
// machine CPU time minus the run's own.
func takeCPUSnapshot() (cpuSnapshot, error) {
	s := cpuSnapshot{at: time.Now()}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s, err
	}
	if s.machine, err = parseMachineBusy(b); err != nil {
		return s, err
	}
	self := os.Getpid()
	b, err = os.ReadFile("/proc/self/stat")
	if err != nil {
		return s, err
	}
	own, err := parseStatTimes(b, true)
	if err != nil {
		return s, err
	}
	s.own = own
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // exited meanwhile
		}
		if ppid, err := parseStatPPID(b); err != nil || ppid != self {
			continue
		}
		if cpu, err := parseStatTimes(b, true); err == nil {
			s.own += cpu
		}
	}
	return s, nil
}

// otherCores is the average number of CPUs that work other than this run
// kept busy between two snapshots.
func otherCores(before, after cpuSnapshot) float64 {
	wall := after.at.Sub(before.at).Seconds()
	if wall <= 0 {
		return 0
	}
	other := (after.machine - before.machine) - (after.own - before.own)
	return max(other, 0) / wall
}

// parseMachineBusy reads user, nice and system seconds from the first line
// of /proc/stat. Interrupt time is left out: loopback networking, which
// the run causes, is accounted there.
func parseMachineBusy(b []byte) (float64, error) {
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 4 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var ticks uint64
	for _, v := range f[1:4] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %q: %w", line, err)
		}
		ticks += n
	}
	return float64(ticks) / clockTicks, nil
}
