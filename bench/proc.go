package bench

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times; Linux
// reports 100 on every architecture whatever the kernel's HZ.
const clockTicks = 100

// ProcessCPU is the user plus system CPU seconds a process has used,
// threads included, from /proc/PID/stat.
func ProcessCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu of %d: %w", pid, err)
	}
	return parseStatTimes(b, false)
}

// statFields returns the fields of a /proc/PID/stat line after the command
// name (field 2), which is in parentheses and may hold spaces and
// parentheses: fields are counted after its last ')'. The result's index 0
// is field 3.
func statFields(b []byte) ([]string, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("stat: no command name in %q", b)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// parseStatTimes reads utime and stime (fields 14 and 15), and with
// children also cutime and cstime (16 and 17: children waited for), in
// seconds.
func parseStatTimes(b []byte, children bool) (float64, error) {
	fields, err := statFields(b)
	if err != nil {
		return 0, err
	}
	last := 12
	if children {
		last = 14
	}
	if len(fields) <= last {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least %d", len(fields), last+1)
	}
	var ticks uint64
	for _, v := range fields[11 : last+1] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: bad CPU time %q", v)
		}
		ticks += n
	}
	return float64(ticks) / clockTicks, nil
}

// parseStatPPID reads the parent's pid (field 4).
func parseStatPPID(b []byte) (int, error) {
	fields, err := statFields(b)
	if err != nil {
		return 0, err
	}
	if len(fields) < 2 {
		return 0, fmt.Errorf("stat: no parent pid")
	}
	return strconv.Atoi(fields[1])
}

// ProcessRSS is a process's resident set size in bytes, from
// /proc/PID/status.
func ProcessRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("rss of %d: %w", pid, err)
	}
	return parseStatusRSS(b)
}

// parseStatusRSS reads the VmRSS line ("VmRSS:    1234 kB").
func parseStatusRSS(b []byte) (float64, error) {
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("status: bad VmRSS line %q", line)
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("status: bad VmRSS line %q", line)
		}
		return float64(kb) * 1024, nil
	}
	return 0, fmt.Errorf("status: no VmRSS line")
}

// sumPIDs adds up f over pids.
func sumPIDs(pids []int, f func(int) (float64, error)) (float64, error) {
	var total float64
	for _, pid := range pids {
		v, err := f(pid)
		if err != nil {
			return 0, err
		}
		total += v
	}
	return total, nil
}

// DescribeMachine collects what results.md prints about the machine.
// versions maps a program to the command that prints its version; the
// first line of its output is kept.
func DescribeMachine(versions map[string][]string) Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), Versions: map[string]string{}, LoadStart: loadAverage()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPU = cpuModel(b)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	for name, argv := range versions {
		m.Versions[name] = commandVersion(argv)
	}
	return m
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel(cpuinfo []byte) string {
	for line := range strings.SplitSeq(string(cpuinfo), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// loadAverage is the 1, 5 and 15 minute load averages.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
