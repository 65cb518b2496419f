package bench

import (
	"os"
	"testing"
	"time"
)

func TestParseStatTimes(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want float64
		ok   bool
	}{
		{"plain", "1234 (meshproxy) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0", 3.0, true},
		{"command with spaces and parens", "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 0 0", 0.03, true},
		{"no command", "1234 meshproxy S 1", 0, false},
		{"truncated", "1234 (x) S 1 2 3", 0, false},
		{"not numbers", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 a b 0", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatTimes([]byte(tt.in), false)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
			if tt.ok && got != tt.want {
				t.Errorf("got %v s, want %v", got, tt.want)
			}
		})
	}
}

func TestParseStatusRSS(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want float64
		ok   bool
	}{
		{"present", "Name:\tx\nVmPeak:\t 9999 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n", 2048 * 1024, true},
		{"missing", "Name:\tx\n", 0, false},
		{"bad unit", "VmRSS:\t 12 MB\n", 0, false},
		{"bad number", "VmRSS:\t x kB\n", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatusRSS([]byte(tt.in))
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
			if tt.ok && got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// The readers work on a real process: this one.
func TestProcessCPUAndRSSOfSelf(t *testing.T) {
	pid := os.Getpid()
	for range 1_000_000 { // use some CPU
		_ = make([]byte, 16)
	}
	if rss, err := ProcessRSS(pid); err != nil || rss < 1<<20 {
		t.Errorf("ProcessRSS = %v, %v; want at least 1 MiB", rss, err)
	}
	if cpu, err := ProcessCPU(pid); err != nil || cpu < 0 {
		t.Errorf("ProcessCPU = %v, %v", cpu, err)
	}
	if _, err := ProcessCPU(-1); err == nil {
		t.Error("no error for a process that does not exist")
	}
	if _, err := sumPIDs([]int{pid, -1}, ProcessRSS); err == nil {
		t.Error("sumPIDs hid an error")
	}
}

func TestCPUModel(t *testing.T) {
	in := "processor\t: 0\nvendor_id\t: X\nmodel name\t: Example CPU @ 3GHz\nprocessor\t: 1\nmodel name\t: Example CPU @ 3GHz\n"
	if got := cpuModel([]byte(in)); got != "Example CPU @ 3GHz" {
		t.Errorf("cpuModel = %q", got)
	}
	if got := cpuModel([]byte("processor: 0\n")); got != "unknown" {
		t.Errorf("cpuModel without a model = %q", got)
	}
}

func TestParseStatChildrenAndParent(t *testing.T) {
	line := []byte("1234 (x y) S 77 1234 1234 0 -1 0 0 0 0 0 250 50 30 20 20 0 8 0 100 0 0")
	all, err := parseStatTimes(line, true)
	if err != nil || all != 3.5 {
		t.Errorf("with children: %v, %v; want 3.5 s", all, err)
	}
	if ppid, err := parseStatPPID(line); err != nil || ppid != 77 {
		t.Errorf("ppid = %v, %v; want 77", ppid, err)
	}
	if _, err := parseStatTimes([]byte("1 (x) S 1 1 1 0 -1 0 0 0 0 0 1 2"), true); err == nil {
		t.Error("no error for a line without children's times")
	}
}

func TestParseMachineBusy(t *testing.T) {
	got, err := parseMachineBusy([]byte("cpu  1000 10 490 9999 5 0 300 7 0 0\ncpu0 1 2 3 4\n"))
	if err != nil || got != 15 {
		t.Errorf("busy = %v, %v; want 15 s (user+nice+system)", got, err)
	}
	for _, bad := range []string{"", "intr 1 2 3", "cpu 1 x 3 4"} {
		if _, err := parseMachineBusy([]byte(bad)); err == nil {
			t.Errorf("no error for %q", bad)
		}
	}
}

func TestOtherCores(t *testing.T) {
	t0 := time.Unix(100, 0)
	before := cpuSnapshot{at: t0, machine: 10, own: 4}
	tests := []struct {
		after cpuSnapshot
		want  float64
	}{
		{cpuSnapshot{at: t0.Add(2 * time.Second), machine: 14, own: 7}, 0.5}, // 4 busy, 3 ours, over 2 s
		{cpuSnapshot{at: t0.Add(2 * time.Second), machine: 13, own: 7}, 0},   // rounding: never negative
		{cpuSnapshot{at: t0, machine: 20, own: 4}, 0},                        // no time passed
	}
	for _, tt := range tests {
		if got := otherCores(before, tt.after); got != tt.want {
			t.Errorf("otherCores(%+v) = %v, want %v", tt.after, got, tt.want)
		}
	}
}

// A snapshot of this very process counts its own CPU as its own.
func TestTakeCPUSnapshot(t *testing.T) {
	s, err := takeCPUSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	if s.machine <= 0 || s.own < 0 || s.own > s.machine {
		t.Errorf("snapshot %+v: want own CPU within the machine's", s)
	}
}
