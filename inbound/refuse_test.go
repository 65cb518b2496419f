package inbound

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/seed722d2a70/meshproxy/internal/ratelog"
)

// A flood of refused peers costs one log line per reason and interval, and
// one reason's flood does not hide another's first line.
func TestRefusalLogsAreRateLimitedPerReason(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	p := &Proxy{refusals: ratelog.NewKeyed(time.Hour)}
	log := zap.New(core)
	for range 100 {
		p.logRefusal(log, "connection refused", "plaintext", errors.New("not TLS"))
	}
	p.logRefusal(log, "connection refused", "unauthorized", errors.New("who?"))
	got := logs.All()
	if len(got) != 2 {
		t.Fatalf("%d log lines, want 2 (one per reason): %v", len(got), got)
	}
	for i, want := range []string{"plaintext", "unauthorized"} {
		if r := got[i].ContextMap()["reason"]; r != want {
			t.Errorf("line %d: reason %v, want %q", i, r, want)
		}
	}
}
