package main

import (
	"runtime"
	"runtime/metrics"
	"testing"
)

// The ballast raises the GC's heap goal by at least its size while it is
// kept, unless the operator set GOGC or GOMEMLIMIT.
func TestHeapBallast(t *testing.T) {
	tests := []struct {
		name       string
		env        map[string]string
		wantRaised bool
	}{
		{name: "default", wantRaised: true},
		{name: "GOGC set", env: map[string]string{"GOGC": "100"}},
		{name: "GOMEMLIMIT set", env: map[string]string{"GOMEMLIMIT": "1GiB"}},
	}
	heapGoal := func() uint64 {
		runtime.GC()
		s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := heapGoal()
			ballast := newHeapBallast(func(k string) string { return tc.env[k] })
			with := heapGoal()
			runtime.KeepAlive(ballast)
			if tc.wantRaised {
				if len(ballast) != heapBallast || with < before+heapBallast {
					t.Errorf("heap goal %d MiB with a %d-byte ballast, %d MiB before; want it raised by at least %d MiB",
						with>>20, len(ballast), before>>20, heapBallast>>20)
				}
			} else if ballast != nil {
				t.Errorf("a %d-byte ballast with %v set, want none", len(ballast), tc.env)
			}
		})
	}
}
