package bench

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestClosedLoop(t *testing.T) {
	var ops atomic.Int64
	rate, h, err := closedLoop(3, 100*time.Millisecond, func(int) func() error {
		return func() error {
			ops.Add(1)
			time.Sleep(time.Millisecond)
			return nil
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := ops.Load(); h.TotalCount() != n || n < 3 {
		t.Errorf("histogram counts %d operations, the workers ran %d", h.TotalCount(), n)
	}
	if h.Min() < 1000 {
		t.Errorf("shortest operation %d µs, but each sleeps 1 ms", h.Min())
	}
	if rate <= 0 || rate > 3000 {
		t.Errorf("rate %v/s: three workers of ≥ 1 ms operations make at most 3000/s", rate)
	}

	bad := errors.New("broken")
	_, _, err = closedLoop(2, time.Minute, func(i int) func() error {
		return func() error {
			if i == 1 {
				return bad
			}
			time.Sleep(time.Millisecond)
			return nil
		}
	})
	if !errors.Is(err, bad) {
		t.Errorf("err = %v, want the failing worker's", err)
	}
}
