package detect

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/seed722d2a70/meshproxy/internal/tcptest"
)

// Canceling a context interrupts every detection waiting under it, whether
// they share its registration or, past maxWatchGroups contexts, each have
// their own; a detection that ended before is not disturbed, and nothing of
// the context stays in the Detector.
func TestCancelInterruptsWaitingDetections(t *testing.T) {
	tests := []struct {
		name string
		// others is how many other contexts already have detections
		// registered.
		others int
	}{
		{"shared registration", 0},
		{"past the bound of shared registrations", maxWatchGroups},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := New(Config{Timeout: patience})
			for range tt.others {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				_, server := tcptest.Pair(t)
				d.watchers.unwatch(d.watchers.watch(ctx, server)) // leaves the group
			}
			if len(d.watchers.groups) != tt.others {
				t.Fatalf("%d shared groups, want %d", len(d.watchers.groups), tt.others)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()

			// One detection ends before the cancellation.
			client, server := tcptest.Pair(t)
			if _, err := client.Write([]byte("\x00")); err != nil {
				t.Fatal(err)
			}
			res, decided, err := d.Detect(ctx, server)
			if err != nil || res.Outcome != OutcomeOpaque {
				t.Fatalf("got %v, %v", res.Outcome, err)
			}

			const waiting = 3
			errs := make(chan error, waiting)
			for range waiting {
				_, server := tcptest.Pair(t) // a silent client
				go func() {
					_, _, err := d.Detect(ctx, server)
					errs <- err
				}()
			}
			time.Sleep(20 * time.Millisecond) // the reads block
			start := time.Now()
			cancel()
			for range waiting {
				if err := <-errs; !errors.Is(err, context.Canceled) {
					t.Errorf("err = %v, want context.Canceled", err)
				}
			}
			if elapsed := time.Since(start); elapsed > patience/2 {
				t.Errorf("detections ended %v after the cancellation", elapsed)
			}

			if _, err := client.Write([]byte("\x01")); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 2)
			if _, err := io.ReadFull(decided, got); err != nil || string(got) != "\x00\x01" {
				t.Fatalf("the earlier detection's conn read %q, %v", got, err)
			}
			d.watchers.mu.Lock()
			_, kept := d.watchers.groups[ctx.Done()]
			d.watchers.mu.Unlock()
			if kept {
				t.Error("the canceled context's group is still kept")
			}
		})
	}
}

// A context canceled and replaced by a new one: detections under the new
// one are watched afresh.
func TestCancelThenNewContext(t *testing.T) {
	d := New(Config{Timeout: patience})
	for i := range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		_, server := tcptest.Pair(t)
		errc := make(chan error, 1)
		go func() {
			_, _, err := d.Detect(ctx, server)
			errc <- err
		}()
		time.Sleep(10 * time.Millisecond)
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("round %d: err = %v, want context.Canceled", i, err)
			}
		case <-time.After(patience / 2):
			t.Fatalf("round %d: the cancellation did not interrupt detection", i)
		}
	}
}
