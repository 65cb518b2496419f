package bench

import (
	"os"
	"testing"
)

func TestParseStatCPU(t *testing.T) {
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
			got, err := parseStatCPU([]byte(tt.in))
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
